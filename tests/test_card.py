"""The model card: Hugging Face metadata the Hub reads back (library, pipeline tag, base model, model-index),
and a text that states the model, its data, its held-out results and its fill-mask examples."""
import pytest
from huggingface_hub import ModelCard

from mlmpipe.card import model_card

MODEL = {"init": "scratch", "checkpoint": None, "family": "roberta", "architecture": "RobertaForMaskedLM",
         "params_total": 3742208, "layers": 4, "hidden": 256}
CORPUS = {"source": "builtin:python-docs", "train_documents": 1234}
EVAL = {"examples": 12, "perplexity": 27.38712, "top1_accuracy": 0.468412, "top5_accuracy": 0.63951,
        "masked_tokens": 2310, "before_perplexity": 4102.5, "before_top1_accuracy": 0.0, "before_top5_accuracy": 0.001}
FILL = {"prompts": 2, "prompts_with_answers": 1, "top_k": 3, "cloze_top1": 1.0, "cloze_topk": 1.0,
        "results": [{"text": 'The "<mask>" statement | is used for conditional execution.', "answers": ["if"],
                     "predictions": [{"token": "if", "prob": 0.9}, {"token": "for", "prob": 0.05},
                                     {"token": "while", "prob": 0.01}], "rank": 1, "unreachable": []},
                    {"text": "Hello <mask>.", "answers": [], "predictions": [{"token": "world", "prob": 0.5}],
                     "rank": None, "unreachable": []}]}
TRAINING = {"lr": 0.002, "max_steps": 1800, "batch_size": 32}


def card(**change) -> ModelCard:
    args = dict(name="mlmpipe-model", license=None, language=None, model=MODEL, corpus=CORPUS, evaluation=EVAL,
                fill_mask=FILL, training=TRAINING)
    return ModelCard(model_card(**{**args, **change}))


def test_metadata_parses_with_huggingface_hub(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(str(card(license="apache-2.0", language="en")), encoding="utf-8")
    loaded = ModelCard.load(path)  # what the Hub and `hf upload` read
    data = loaded.data
    assert (data.library_name, data.pipeline_tag, data.license, data.language) == (
        "transformers", "fill-mask", "apache-2.0", "en")
    assert data.base_model is None and "roberta" in data.tags and data.model_name == "mlmpipe-model"
    results = {(r.metric_type, r.metric_config): r for r in data.eval_results}
    assert results[("perplexity", None)].metric_value == 27.3871
    assert results[("accuracy", "top1")].metric_value == 0.4684
    assert results[("accuracy", "top5")].metric_value == 0.6395
    assert {r.task_type for r in data.eval_results} == {"fill-mask"}
    assert {r.dataset_split for r in data.eval_results} == {"validation"}
    assert {r.dataset_name for r in data.eval_results} == {"builtin:python-docs"}


def test_adapted_model_names_its_base_and_hub_dataset():
    data = card(model={**MODEL, "init": "pretrained", "checkpoint": "distilbert-base-uncased"},
                corpus={**CORPUS, "source": "hf:org/legal-text"}).data
    assert data.base_model == "distilbert-base-uncased" and data.datasets == ["org/legal-text"]
    pinned = card(model={**MODEL, "init": "pretrained", "checkpoint": "distilbert-base-uncased",
                         "resolved_commit": "12040accade4e8a0f71eabdb258fecc2e7e948be"})
    assert "adapted from `distilbert-base-uncased` (commit `12040accade4`)" in pinned.text
    assert {r.dataset_type for r in data.eval_results} == {"org/legal-text"}


def test_text_states_model_results_examples_and_params():
    text = card().text
    assert "pretrained from scratch on `builtin:python-docs`" in text and "3,742,208 parameters" in text
    assert "| perplexity | 27.39 | 4102.50 |" in text and "| top-1 accuracy | 46.8% | 0.0% |" in text
    assert 'pipeline("fill-mask"' in text
    assert "| The \"<mask>\" statement \\| is used for conditional execution. | if | `if`, `for`, `while` |" in text
    assert "| Hello <mask>. | — | `world` |" in text
    assert '"lr": 0.002' in text and '"max_steps": 1800' in text


@pytest.mark.parametrize("missing", ["perplexity", "top1_accuracy"])
def test_a_record_without_its_results_is_refused(missing):
    with pytest.raises(KeyError):
        card(evaluation={k: v for k, v in EVAL.items() if k != missing})
