"""Train (or reuse) the tokenizer and save it in standard Hugging Face format.

Byte-level BPE follows RoBERTa (``<s> <pad> </s> <unk> <mask>``; the mask token strips the space
on its left, so ``"The <mask> statement"`` encodes like a masked word in training); WordPiece
follows BERT (``[CLS] [SEP] [PAD] [UNK] [MASK]``, optional lowercasing).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from . import hub
from .params import MlmpipeError

log = logging.getLogger(__name__)

BPE_SPECIALS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                "mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>"}
WORDPIECE_SPECIALS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                      "mask_token": "[MASK]"}


class TokenizerError(MlmpipeError):
    pass


def _specials_in_order(kind: str) -> list:
    if kind == "bpe":  # the mask strips the space on its left, as roberta-base's does
        return ["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True, special=True)]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train(texts: Iterable[str], kind: str, vocab_size: int, min_frequency: int, lowercase: bool,
          model_max_length: int) -> PreTrainedTokenizerFast:
    """Train a fast tokenizer of ``kind`` ('bpe' or 'wordpiece') on ``texts``."""
    specials = _specials_in_order(kind)
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase or None)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            show_progress=False, special_tokens=specials)
    tok.train_from_iterator(texts, trainer)
    _log_size(tok.get_vocab_size(), kind, vocab_size, min_frequency, len(specials))
    return wrap(tok, kind, model_max_length)


def _log_size(got: int, kind: str, asked: int, min_frequency: int, n_specials: int) -> None:
    """A warning when the trained vocabulary is not the size asked for, with the reason."""
    if got > asked and kind == "bpe":
        why = (f"byte-level BPE starts from its 256 byte symbols plus {n_specials} special tokens "
               f"({256 + n_specials}) and only adds merges to that, so " +
               ("no merges were learned and no whole word is a token" if got <= 256 + n_specials else
                "the merges come on top") + f"; ask for well over {256 + n_specials}")
    elif got > asked:
        why = ("WordPiece keeps every character of the training text (and its ## continuation form) as a token, "
               f"plus {n_specials} special tokens; ask for more")
    elif got < asked:
        why = (f"the training text has no more pairs seen at least train_tokenizer.min_frequency = {min_frequency} "
               f"times to merge; lower min_frequency or train on more text")
    else:
        return
    log.warning("train_tokenizer.vocab_size = %d asked, the trained tokenizer has %d tokens: %s", asked, got, why)


def wrap(tok: Tokenizer, kind: str, model_max_length: int) -> PreTrainedTokenizerFast:
    """Add the family's post-processor and special tokens and wrap as a transformers fast tokenizer."""
    specials = BPE_SPECIALS if kind == "bpe" else WORDPIECE_SPECIALS
    cls, sep = specials["cls_token"], specials["sep_token"]
    cls_id, sep_id = tok.token_to_id(cls), tok.token_to_id(sep)
    if kind == "bpe":
        tok.post_processor = processors.RobertaProcessing((sep, sep_id), (cls, cls_id), trim_offsets=True,
                                                          add_prefix_space=False)
    else:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, cls_id), (sep, sep_id)])
    kwargs = dict(specials)
    kwargs["mask_token"] = AddedToken(specials["mask_token"], lstrip=(kind == "bpe"), special=True)
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **kwargs)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _broken_json(path: str, revision: str | None = None) -> tuple[str, str] | None:
    """(file, why) for the first tokenizer JSON file of ``path`` (a directory, or a Hub id's cached snapshot at
    ``revision``) that is not valid JSON, or None."""
    folder = path if os.path.isdir(path) else os.path.dirname(hub.cached_file(path, TOKENIZER_FILES, revision) or "")
    for name in TOKENIZER_FILES if folder else ():
        f = os.path.join(folder, name)
        if os.path.isfile(f):
            try:
                with open(f, encoding="utf-8") as fh:
                    json.load(fh)
            except (ValueError, OSError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                return f, (f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else str(e))
    return None


def load(path: str, key: str | None = None, revision: str | None = None,
         revision_key: str | None = None) -> PreTrainedTokenizerFast:
    """The fast tokenizer of a directory or Hub id ``path`` at ``revision`` (a branch, tag or commit; ``key`` and
    ``revision_key``: the parameters that named them, for errors)."""
    where = f"{key} = {path!r}" if key else path
    try:
        tok = AutoTokenizer.from_pretrained(path, **hub.resolve(path, key, TOKENIZER_FILES[:2], revision,
                                                                revision_key))
    except Exception as e:  # noqa: BLE001 (transformers and the tokenizers library raise many kinds)
        if isinstance(e, MlmpipeError):
            raise
        broken = _broken_json(path, revision)
        if broken:
            raise TokenizerError(f"{where}: {broken[0]} is corrupt or truncated (not valid JSON: {broken[1]}); "
                                 f"re-download it, or save the tokenizer again with save_pretrained(dir)") from None
        if not isinstance(e, (OSError, ValueError)):
            raise
        raise TokenizerError(f"{where}: cannot load a tokenizer: {str(e).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(f"{path}: not a fast (tokenizers-backed) tokenizer")
    if tok.mask_token is None:
        raise TokenizerError(f"{path}: the tokenizer has no mask token, so it cannot serve masked language modeling")
    return tok


# transformers 5 names the tokenizer of a bare tokenizer.json "TokenizersBackend", a class 4.x does not have;
# "PreTrainedTokenizerFast" is the same class under the name both know (5.x keeps it as an alias).
# The family's own fast classes are no substitute: 4.x's BertTokenizerFast, for one, re-lowercases a cased
# WordPiece tokenizer (its do_lower_case defaults to True), where this class encodes as tokenizer.json says.
GENERIC_CLASS = "PreTrainedTokenizerFast"


def save(tok: PreTrainedTokenizerFast, directory: str | os.PathLike) -> None:
    """``tok.save_pretrained(directory)``, loadable by transformers 4.x as well as 5.x.

    tokenizer_config.json names the generic fast class instead of 5.x's "TokenizersBackend" and keeps the
    tokenizer's ``model_input_names`` (which 5.x does not save), so both versions return the inputs the
    model takes (DistilBERT's forward refuses token_type_ids). Written as transformers writes it
    (sorted keys), so identical tokenizers give byte-identical files, re-saved after loading or not.
    """
    tok.save_pretrained(directory)
    path = Path(directory) / "tokenizer_config.json"
    with open(path, encoding="utf-8") as fh:
        config = json.load(fh)
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = GENERIC_CLASS
    config["model_input_names"] = list(tok.model_input_names)
    for key in ("is_local", "local_files_only"):  # how 5.x loaded it, not part of the tokenizer
        config.pop(key, None)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def kind_of(tok: PreTrainedTokenizerFast) -> str:
    """'bpe' (byte-level BPE) or 'wordpiece', read from the tokenizer's model."""
    model = type(tok.backend_tokenizer.model).__name__
    return {"BPE": "bpe", "WordPiece": "wordpiece"}.get(model, model.lower())


def word_start_table(tok: PreTrainedTokenizerFast) -> np.ndarray:
    """``table[id]`` is True where token ``id`` begins a word (whole-word masking needs it).

    WordPiece: every piece but ``##`` continuations. Byte-level BPE: pieces that begin with the
    space marker ``Ġ``; a piece right after a special token also begins a word (masking handles that).
    """
    vocab = tok.get_vocab()
    table = np.zeros(max(vocab.values()) + 1, dtype=bool)
    bpe = kind_of(tok) == "bpe"
    for piece, idx in vocab.items():
        table[idx] = piece.startswith("Ġ") if bpe else not piece.startswith("##")
    for idx in tok.all_special_ids:
        table[idx] = True
    return table


def stats(tok: PreTrainedTokenizerFast, requested: int, texts: list[str]) -> dict:
    """Requested and achieved vocabulary size, and fertility (tokens per word) on ``texts``."""
    words = sum(len(t.split()) for t in texts)
    tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]) if texts else 0
    return {"kind": kind_of(tok), "vocab_size_requested": requested, "vocab_size": len(tok),
            "validation_words": words, "validation_tokens": tokens,
            "fertility": round(tokens / words, 4) if words else None}
