"""mlmpipe: masked language model pretraining as a DVC pipeline."""
