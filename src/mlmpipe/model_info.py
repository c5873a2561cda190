"""What build_model reports about the model it made (metrics/model.json): the config's shape and parameter counts.

Only build_model runs this, so a change here reruns no training.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def param_counts(model: PreTrainedModel) -> dict:
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for p in model.base_model.embeddings.parameters())
    return {"params_total": total, "params_embedding": emb, "params_non_embedding": total - emb}


def describe(model: PreTrainedModel) -> dict:
    c = model.config
    get = lambda *names: next((getattr(c, n) for n in names if hasattr(c, n)), None)  # noqa: E731
    return {"family": c.model_type, "architecture": type(model).__name__, "vocab_size": get("vocab_size"),
            "layers": get("num_hidden_layers", "n_layers"), "hidden": get("hidden_size", "dim"),
            "heads": get("num_attention_heads", "n_heads"), "intermediate": get("intermediate_size", "hidden_dim"),
            "max_position_embeddings": get("max_position_embeddings"), **param_counts(model)}
