"""Typed, frozen parameter sections, validated before any work starts.

Each stage has one section in params.yaml, named like the stage; a few sections are
shared (``seed``, ``paths``, ``model``). ``parse(cls, name, raw)`` turns a raw mapping
into the dataclass or raises ``ParamError`` with one line that names the key, the bad
value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from . import families

FamilyName = Literal[families.NAMES]
PresetName = Literal[families.PRESET_NAMES]


class MlmpipeError(Exception):
    """An error the user can fix; stages print it as one line and exit non-zero."""


class ParamError(MlmpipeError):
    pass


def _f(default: Any, *, gt=None, ge=None, lt=None, le=None, doc: str = "") -> Any:
    """A field with an optional numeric range checked by ``parse``."""
    meta = {k: v for k, v in dict(gt=gt, ge=ge, lt=lt, le=le).items() if v is not None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Paths:
    corpus: str = "data/corpus"
    tokenizer: str = "data/tokenizer"
    tokenized: str = "data/tokenized"
    model_init: str = "data/model_init"
    model: str = "data/model"
    checkpoints: str = "data/checkpoints"
    metrics: str = "metrics"
    release: str = "data/release"  # the publishable folder: the model, its tokenizer and the model card


@dataclass(frozen=True)
class FetchCorpus:
    source: str = "builtin:python-docs"  # builtin:python-docs | file path/glob | http(s) URL | hf:<dataset>
    format: Literal["auto", "txt", "jsonl", "json", "csv", "parquet"] = "auto"
    txt_mode: Literal["line", "paragraph"] = "paragraph"
    text_column: str = "text"
    sha256: Optional[str] = None
    hf_config: Optional[str] = None
    hf_split: str = "train"
    hf_revision: Optional[str] = None
    min_chars: int = _f(40, ge=0)
    dedupe: bool = True
    max_documents: Optional[int] = _f(None, gt=0)
    errors: Literal["strict", "replace"] = "strict"
    validation_fraction: float = _f(0.05, ge=0.0, lt=1.0)
    validation_source: Optional[str] = None
    # more sources (same forms as source) for the training split only: validate on source, train on more text
    train_extra: tuple = ()
    timeout_s: float = _f(60.0, gt=0)
    max_download_mb: float = _f(2048.0, gt=0)


@dataclass(frozen=True)
class TrainTokenizer:
    kind: Literal["bpe", "wordpiece"] = "bpe"
    vocab_size: int = _f(4096, ge=64, le=1_000_000)
    min_frequency: int = _f(2, ge=1)
    lowercase: bool = False
    from_dir: Optional[str] = None  # reuse an existing tokenizer instead of training one
    from_revision: Optional[str] = None  # a Hub id's branch, tag or commit (pin a commit: it is recorded)
    model_max_length: int = _f(512, gt=0)


@dataclass(frozen=True)
class TokenizeGroup:
    mode: Literal["group", "line_by_line", "sentence_pairs"] = "group"  # pairs: BERT's NSP input
    block_size: int = _f(128, ge=8, le=65536)
    num_proc: int = _f(1, ge=1, le=256)
    batch_size: int = _f(1000, ge=1)


@dataclass(frozen=True)
class Model:
    family: FamilyName = "modernbert"  # families.NAMES
    preset: Optional[PresetName] = None  # families.PRESET_NAMES
    layers: int = _f(4, ge=1, le=96)
    hidden: int = _f(256, ge=8)
    heads: int = _f(4, ge=1)
    intermediate: int = _f(512, ge=8)
    dropout: float = _f(0.0, ge=0.0, lt=1.0)
    max_position_embeddings: Optional[int] = _f(None, gt=0)  # default: what block_size needs
    next_sentence: bool = False  # BERT's second objective: BertForPreTraining (MLM + NSP), family bert only


@dataclass(frozen=True)
class BuildModel:
    init: Literal["scratch", "pretrained"] = "scratch"
    checkpoint: Optional[str] = None  # local directory or Hub id, for init: pretrained
    revision: Optional[str] = None  # a Hub id's branch, tag or commit (pin a commit: it is recorded)
    resize_embeddings: bool = False
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Pretrain:
    launcher: str = "python"  # e.g. "accelerate launch --num_processes 2"
    fsdp: bool = False  # shard weights, gradients and optimizer state over the processes (FSDP2, sharding.py)
    lr: float = _f(2e-3, gt=0, lt=1.0)
    weight_decay: float = _f(0.01, ge=0)
    beta1: float = _f(0.9, ge=0, lt=1)
    beta2: float = _f(0.98, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = _f(100, ge=0)
    max_steps: Optional[int] = _f(1800, gt=0)
    epochs: Optional[float] = _f(None, gt=0)
    batch_size: int = _f(32, ge=1)
    grad_accum: int = _f(1, ge=1)
    clip_norm: Optional[float] = _f(1.0, gt=0)
    mixed_precision: Literal["auto", "no", "bf16", "bf16-pure", "fp16"] = "auto"
    mlm_probability: float = _f(0.3, gt=0, lt=1)
    whole_word: bool = False
    random_offsets: bool = True  # group mode: examples start at a seeded random token, new cuts every epoch
    # line_by_line / sentence_pairs: batches of examples of similar length (less padding), seeded random order
    group_by_length: bool = True
    sparse_head: bool = True
    compile: bool = False
    # Attention of the training steps. matmul: two matmuls and a softmax in the compute dtype (CPU bf16: faster
    # than SDPA's math kernel, which upcasts to fp32, and the CPU flash kernel; bench/README.md); math, flash,
    # efficient: that SDPA kernel; default: PyTorch's SDPA choice; auto: matmul on CPU, default on GPU
    attention_kernel: Literal["auto", "default", "matmul", "math", "flash", "efficient"] = "auto"
    num_threads: int = _f(0, ge=0)  # 0: all physical cores
    log_every: int = _f(100, ge=1)
    eval_every: int = _f(300, ge=1)
    eval_blocks: int = _f(64, ge=1)
    checkpoint_every: int = _f(500, ge=1)
    keep_checkpoints: int = _f(2, ge=1)
    keep_best: bool = False  # save the weights of the validation with the lowest loss (step recorded), not the last
    resume_other_code: bool = False  # resume a checkpoint that other training code wrote (after a code fix)


@dataclass(frozen=True)
class Evaluate:
    mlm_probability: float = _f(0.15, gt=0, lt=1)
    seed: int = _f(1234, ge=0)
    batch_size: int = _f(32, ge=1)
    passes: int = _f(4, ge=1, le=100)  # independent fixed mask draws over the validation split
    max_blocks: Optional[int] = _f(None, gt=0)
    baseline: bool = True  # also evaluate the initial model (before/after)


@dataclass(frozen=True)
class Prompt:
    text: str
    answers: tuple = ()


@dataclass(frozen=True)
class FillMaskReport:
    top_k: int = _f(5, ge=1, le=100)
    model_name: str = "mlmpipe-model"  # the model card's title and `model-index` name
    license: Optional[str] = None  # the card's license (an SPDX id such as apache-2.0), or none stated
    language: Optional[str] = None  # the card's language code (en, de, ...), or none stated
    prompts: tuple = ()


SECTIONS: dict[str, type] = {
    "paths": Paths,
    "fetch_corpus": FetchCorpus,
    "train_tokenizer": TrainTokenizer,
    "tokenize_group": TokenizeGroup,
    "model": Model,
    "build_model": BuildModel,
    "pretrain": Pretrain,
    "evaluate": Evaluate,
    "fill_mask_report": FillMaskReport,
}
# yaml key -> dataclass field, where a field name would be a Python keyword
_ALIASES = {"from": "from_dir"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + " or null"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            tuple: "a list"}.get(tp, str(tp))


def _check_type(tp: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return True, None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                ok, v = _check_type(arg, value)
                if ok:
                    return True, v
        return False, value
    if origin is Literal:
        return value in typing.get_args(tp), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if tp is tuple:
        return isinstance(value, (list, tuple)), tuple(value) if isinstance(value, (list, tuple)) else value
    return isinstance(value, tp), value


def _check_range(where: str, value: Any, meta: dict) -> None:
    if value is None or not meta:
        return
    for op, bound, test in (("gt", ">", lambda v, b: v > b), ("ge", ">=", lambda v, b: v >= b),
                            ("lt", "<", lambda v, b: v < b), ("le", "<=", lambda v, b: v <= b)):
        if op in meta and not test(value, meta[op]):
            rules = " and ".join(f"{dict(gt='>', ge='>=', lt='<', le='<=')[k]} {b}" for k, b in meta.items())
            raise ParamError(f"{where} = {value!r}: must be {rules}")


def parse(cls: type, name: str, raw: Any) -> Any:
    """Validate ``raw`` (a mapping from params.yaml) into the frozen dataclass ``cls``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamError(f"{name} = {raw!r}: must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = sorted(next((k for k, v in _ALIASES.items() if v == f), f) for f in fields)
    values = {}
    for key, value in raw.items():
        fname = _ALIASES.get(key, key)
        if fname not in fields:
            raise ParamError(f"{name}.{key}: unknown key; allowed keys are {', '.join(known)}")
        ok, value = _check_type(hints[fname], value)
        if not ok:
            raise ParamError(f"{name}.{key} = {raw[key]!r}: must be {_describe(hints[fname])}")
        _check_range(f"{name}.{key}", value, dict(fields[fname].metadata))
        values[fname] = value
    missing = [k for k, f in fields.items()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and k not in values]
    if missing:
        raise ParamError(f"{name}.{missing[0]}: required key is missing")
    return _cross_check(name, cls(**values))


def _cross_check(name: str, p: Any) -> Any:
    """Rules between fields of one section, checked as soon as the section is parsed."""
    if isinstance(p, Model):
        if p.hidden % p.heads:
            raise ParamError(f"model.hidden = {p.hidden} is not divisible by model.heads = {p.heads}: "
                             f"choose heads among {[h for h in range(1, 33) if p.hidden % h == 0]}")
        if p.next_sentence and not families.FAMILIES[p.family].next_sentence:
            raise ParamError(f"model.next_sentence = true with model.family = {p.family!r}: next-sentence "
                             f"prediction is BERT's objective (BertForPreTraining); set model.family: bert")
    if isinstance(p, BuildModel) and p.init == "pretrained" and not p.checkpoint:
        raise ParamError("build_model.checkpoint = null: init: pretrained needs a checkpoint directory or Hub id")
    if isinstance(p, BuildModel) and p.init == "scratch" and p.checkpoint:
        raise ParamError(f"build_model.checkpoint = {p.checkpoint!r} with init: scratch: set init: pretrained "
                         f"to start from that checkpoint, or checkpoint: null to train from scratch")
    if isinstance(p, BuildModel):
        _check_revision("build_model.revision", p.revision, "build_model.checkpoint", p.checkpoint)
    if isinstance(p, TrainTokenizer):
        _check_revision("train_tokenizer.from_revision", p.from_revision, "train_tokenizer.from", p.from_dir)
    if isinstance(p, Pretrain) and p.max_steps is None and p.epochs is None:
        raise ParamError("pretrain.max_steps = null and pretrain.epochs = null: set one of them")
    if isinstance(p, FetchCorpus) and p.sha256 is not None:
        if len(p.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in p.sha256):
            raise ParamError(f"fetch_corpus.sha256 = {p.sha256!r}: must be 64 hex digits")
    if isinstance(p, FetchCorpus):
        for i, src in enumerate(p.train_extra):
            if not isinstance(src, str) or not src:
                raise ParamError(f"fetch_corpus.train_extra[{i}] = {src!r}: must be a source string (a builtin, "
                                 f"file path or glob, http(s) URL or hf:<dataset>)")
    if isinstance(p, FillMaskReport):
        prompts = []
        for i, item in enumerate(p.prompts):
            prompts.append(_parse_prompt(f"{name}.prompts[{i}]", item))
        return dataclasses.replace(p, prompts=tuple(prompts))
    return p


def _check_revision(key: str, revision: Optional[str], source_key: str, source: Optional[str]) -> None:
    """A Hub revision (branch, tag or commit) is a non-empty name and needs the checkpoint or tokenizer it pins."""
    if revision is None:
        return
    if not revision.strip() or revision != revision.strip():
        raise ParamError(f"{key} = {revision!r}: must be a branch, tag or commit of the Hub id (no spaces around "
                         f"it), or null")
    if not source:
        raise ParamError(f"{key} = {revision!r} with {source_key} = null: a revision pins a Hub id; set "
                         f"{source_key} to the Hub id, or {key}: null")


def check_family(kind: str, family: str) -> None:
    """Refuse a tokenizer of ``kind`` that ``family`` does not take (its record's ``kinds``)."""
    kinds = families.FAMILIES[family].kinds
    if kind not in kinds:
        wanted = " or ".join(kinds)
        raise ParamError(f"train_tokenizer.kind = {kind!r} does not fit model.family = {family!r}: "
                         f"{family} needs a {wanted} tokenizer; change train_tokenizer.kind or model.family")


def check_next_sentence(m: Model, tg: TokenizeGroup) -> None:
    if m.next_sentence != (tg.mode == "sentence_pairs"):
        raise ParamError(f"model.next_sentence = {str(m.next_sentence).lower()} with tokenize_group.mode = "
                         f"{tg.mode!r}: next-sentence prediction trains on sentence pairs; set both "
                         f"(next_sentence: true, mode: sentence_pairs) or neither")


def positions(m: Model, block_size: int) -> int:
    """The max_position_embeddings of a scratch model of ``m`` for blocks of ``block_size``: the family's
    minimum, and model.max_position_embeddings or what the block needs (the family's position offset more)."""
    fam = families.FAMILIES[m.family]
    need = block_size + fam.position_offset
    have = m.max_position_embeddings or need
    if have < need:
        raise ParamError(f"model.max_position_embeddings = {have} is too small for tokenize_group.block_size = "
                         f"{block_size}: {m.family} needs at least {need}")
    return max(have, fam.min_positions)


# precision modes FSDP's sharded weights cannot use, and why
_NOT_SHARDED = {"bf16-pure": "it trains a bf16 copy of the whole model",
                "fp16": "each process's gradient scaler would see only its own shard's overflows"}


def check_across(values: dict) -> None:
    """Rules between sections that the params alone decide (a reused tokenizer's kind is checked by
    build_model, which reads it; a checkpoint's positions by model.load_pretrained, which loads it)."""
    m, tg, tt = values["model"], values["tokenize_group"], values["train_tokenizer"]
    if tt.from_dir is None:
        check_family(tt.kind, m.family)
    check_next_sentence(m, tg)
    if values["build_model"].init == "scratch":  # a checkpoint brings its own positions
        positions(m, tg.block_size)
    p = values["pretrain"]
    if p.fsdp and p.mixed_precision in _NOT_SHARDED:
        raise ParamError(f"pretrain.mixed_precision = {p.mixed_precision!r}: not with pretrain.fsdp: true "
                         f"({_NOT_SHARDED[p.mixed_precision]}); use auto, bf16 or no")


def _parse_prompt(where: str, item: Any) -> Prompt:
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise ParamError(f"{where} = {item!r}: must be a string or a mapping with 'text' (and optional 'answers')")
    unknown = set(item) - {"text", "answers"}
    if unknown:
        raise ParamError(f"{where}.{sorted(unknown)[0]}: unknown key; allowed keys are answers, text")
    if item["text"].count("<mask>") != 1:
        raise ParamError(f"{where}.text = {item['text']!r}: must contain exactly one <mask>")
    answers = item.get("answers", ())
    if isinstance(answers, str):
        answers = (answers,)
    if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
        raise ParamError(f"{where}.answers = {answers!r}: must be a string or a list of strings")
    return Prompt(text=item["text"], answers=tuple(answers))


def parse_seed(raw: Any) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise ParamError(f"seed = {raw!r}: must be an integer >= 0")
    return raw


def load_yaml(text: str, filename: str = "params.yaml") -> dict:
    """Parse the text of params.yaml exactly as DVC does (ruamel.yaml, safe, YAML 1.2: ``2e-5`` is a number,
    ``yes`` a string), with a one-line error when it is not valid YAML."""
    from ruamel.yaml import YAML, YAMLError  # DVC's own parser: what `dvc params diff` shows is what we read

    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise ParamError(f"{filename} is not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamError(f"{filename}: must be a mapping of sections, got {type(data).__name__}")
    return data


def read_params(path: str) -> dict:
    """The raw mapping of the params file at ``path``; unknown sections are refused here, so a misspelled
    section stops every reader instead of being silently ignored."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = load_yaml(fh.read(), path)
    except FileNotFoundError:
        raise ParamError(f"{path}: no such file (run from the project root)") from None
    allowed = {"seed", *SECTIONS}
    for key in data:
        if key not in allowed:
            raise ParamError(f"{path}: unknown section {key!r}; allowed: {', '.join(sorted(allowed))}")
    return data


def section(data: dict, name: str) -> Any:
    """The validated section ``name`` of an already loaded params mapping."""
    if name == "seed":
        return parse_seed(data.get("seed", 42))
    return parse(SECTIONS[name], name, data.get(name))
