"""Build the initial masked language model: from a config (scratch) or from a checkpoint (pretrained).

Also the masked-LM head applied to chosen positions only (``mlm_logits``), so training and
evaluation can skip the vocabulary projection where no loss is computed, while the saved model
stays a standard ``*ForMaskedLM`` checkpoint. What differs between families (configs, presets,
positions, where the head is) is their record in families.py.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForPreTraining, PreTrainedModel

from . import hub
from .families import FAMILIES
from .params import MlmpipeError, Model, positions

log = logging.getLogger(__name__)


class ModelError(MlmpipeError):
    pass


def dims(m: Model) -> tuple[int, int, int, int]:
    """(layers, hidden, heads, intermediate) from the ``model`` section, a preset winning over explicit dims."""
    if m.preset is None:
        return m.layers, m.hidden, m.heads, m.intermediate
    return FAMILIES[m.family].presets[m.preset]


def make_config(m: Model, tok, block_size: int):
    """A transformers config for family ``m.family``, sized by ``m`` and with the tokenizer's vocabulary (the
    rules between the model section and the block size are params.positions')."""
    return FAMILIES[m.family].config(m, tok, dims(m), positions(m, block_size))


def build_scratch(m: Model, tok, block_size: int, seed: int) -> PreTrainedModel:
    config = make_config(m, tok, block_size)
    torch.manual_seed(seed)
    model = (AutoModelForPreTraining if m.next_sentence else AutoModelForMaskedLM).from_config(config)
    log.warning("init: SCRATCH - random weights for a %s model (%s)", m.family, type(model).__name__)
    return model


CHECKPOINT_KEY = "build_model.checkpoint"
REVISION_KEY = "build_model.revision"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def _corrupt_file(path: str, revision: str | None = None) -> str:
    """The first ``*.safetensors`` file of checkpoint ``path`` (a directory, or a Hub id's cached snapshot at
    ``revision``) whose header safetensors cannot read; else the directory."""
    from safetensors import safe_open

    folder = path if os.path.isdir(path) else os.path.dirname(hub.cached_file(path, WEIGHTS, revision) or "")
    for f in sorted(Path(folder).glob("*.safetensors")) if folder else ():
        try:
            with safe_open(str(f), "pt"):
                pass
        except Exception:  # noqa: BLE001 (safetensors raises its own SafetensorError and OSError kinds)
            return str(f)
    return folder or path


def _from_pretrained(cls, path: str, where: str, fix: str, **kwargs) -> PreTrainedModel:
    """``cls.from_pretrained(path, use_safetensors=True)``; a weights file safetensors cannot read is one line that
    names it (``where``: how to name the checkpoint; ``fix``: what to do)."""
    from safetensors import SafetensorError

    try:
        return cls.from_pretrained(path, use_safetensors=True, **kwargs)
    except SafetensorError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        bad = _corrupt_file(path, kwargs.get("revision"))
        raise ModelError(f"{where}{bad} is corrupt or truncated (SafetensorError: {msg}); "
                         f"{fix}") from None


def load(path: str, **kwargs) -> PreTrainedModel:
    """A saved model with the heads it was saved with: BertForPreTraining keeps its next-sentence head."""
    config = AutoConfig.from_pretrained(path, **kwargs)
    nsp = "BertForPreTraining" in (getattr(config, "architectures", None) or ())
    return _from_pretrained(AutoModelForPreTraining if nsp else AutoModelForMaskedLM, path, "",
                            "restore it (dvc checkout) or re-create it (dvc repro reruns the stage that writes it)",
                            **kwargs)


def _pickle_only(path: str) -> list[str]:
    """The PyTorch pickle weights (``*.bin``) of a local checkpoint directory that has no safetensors weights."""
    if not os.path.isdir(path) or any(Path(path).glob("*.safetensors")):
        return []
    return sorted(f.name for f in Path(path).glob("*.bin"))


def has_nsp_head(model: PreTrainedModel) -> bool:
    return hasattr(getattr(model, "cls", None), "seq_relationship")


def load_pretrained(path: str, family: str, tok, block_size: int, resize_embeddings: bool,
                    trust_remote_code: bool, next_sentence: bool = False,
                    revision: str | None = None) -> PreTrainedModel:
    """Checkpoint ``path`` (a directory, or a Hub id at ``revision``: branch, tag or commit) as a masked LM."""
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code,
                                            **hub.resolve(path, CHECKPOINT_KEY, ("config.json",), revision,
                                                          REVISION_KEY))
    except (OSError, ValueError) as e:
        raise ModelError(f"build_model.checkpoint = {path!r}: cannot load a model config: "
                         f"{str(e).strip().splitlines()[0]}") from None
    if config.model_type != family:
        raise ModelError(f"build_model.checkpoint = {path!r} is a {config.model_type} model but model.family = "
                         f"{family!r}: set model.family: {config.model_type}")
    try:
        cls = AutoModelForPreTraining if next_sentence else AutoModelForMaskedLM  # a missing NSP head starts random
        model = _from_pretrained(cls, path, f"{CHECKPOINT_KEY} = {path!r}: ",
                                 "re-download it, or save the model again with save_pretrained(dir, "
                                 "safe_serialization=True)", trust_remote_code=trust_remote_code,
                                 **hub.resolve(path, CHECKPOINT_KEY, WEIGHTS, revision, REVISION_KEY))
    except (OSError, ValueError) as e:
        pickles = _pickle_only(path)
        if pickles:
            raise ModelError(f"{CHECKPOINT_KEY} = {path!r} has no model.safetensors, only PyTorch pickle weights "
                             f"({', '.join(pickles)}), which this pipeline does not load (unpickling can run code): "
                             f"convert it once on a trusted machine (load it with from_pretrained, then "
                             f"save_pretrained(dir, safe_serialization=True)) and set {CHECKPOINT_KEY} to that "
                             f"dir") from None
        raise ModelError(f"build_model.checkpoint = {path!r}: cannot load safetensors weights: "
                         f"{str(e).strip().splitlines()[0]}") from None
    have = model.get_input_embeddings().num_embeddings
    if have != len(tok):
        if not resize_embeddings:
            raise ModelError(f"build_model.checkpoint = {path!r} has a vocabulary of {have} but the tokenizer has "
                             f"{len(tok)}: reuse the checkpoint's tokenizer (train_tokenizer.from: {path}"
                             + (f", train_tokenizer.from_revision: {revision}" if revision else "") + ") or set "
                             f"build_model.resize_embeddings: true")
        model.resize_token_embeddings(len(tok))
        log.warning("resized the embeddings from %d to %d tokens", have, len(tok))
    positions = getattr(config, "max_position_embeddings", None)
    fam = FAMILIES[family]
    offset = fam.position_offset
    if positions is not None and fam.learned_positions and positions < block_size + offset:
        raise ModelError(f"tokenize_group.block_size = {block_size} does not fit the checkpoint's position "
                         f"embeddings ({positions}; {family} needs block_size + {offset}): "
                         f"set tokenize_group.block_size <= {positions - offset}")
    log.warning("init: PRETRAINED - starting from the weights of %s (%s)", path, type(model).__name__)
    return model


def encoder_hidden(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Last hidden states of the encoder (no MLM head)."""
    return encoder_outputs(model, input_ids, attention_mask, token_type_ids)[0]


def encoder_outputs(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> tuple:
    """(last hidden states, pooled output or None); segment ids only for models that take them."""
    extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra)
    return out[0], (out[1] if len(out) > 1 and has_nsp_head(model) else None)


def nsp_logits(model: PreTrainedModel, pooled: torch.Tensor) -> torch.Tensor:
    return model.cls.seq_relationship(pooled)


def mlm_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The model's own MLM head applied to ``hidden`` (any leading shape, e.g. only masked positions)."""
    kind = model.config.model_type
    family = FAMILIES.get(kind)
    if family is None:
        raise ModelError(f"no masked-LM head known for model type {kind!r}")
    return family.mlm_head(model, hidden)


def input_names(model: PreTrainedModel) -> list[str]:
    """What the tokenizer should return for this model (DistilBERT/ModernBERT take no token_type_ids)."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    return [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in accepted]
