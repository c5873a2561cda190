"""Train (or reuse) the tokenizer and save it in standard Hugging Face format.

Byte-level BPE follows RoBERTa (``<s> <pad> </s> <unk> <mask>``; the mask token strips the space
on its left, so ``"The <mask> statement"`` encodes like a masked word in training); WordPiece
follows BERT (``[CLS] [SEP] [PAD] [UNK] [MASK]``, optional lowercasing).
"""
from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from .params import MlmpipeError

log = logging.getLogger(__name__)

BPE_SPECIALS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                "mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>"}
WORDPIECE_SPECIALS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                      "mask_token": "[MASK]"}
# Which tokenizer kinds each architecture accepts.
FAMILY_KINDS = {"roberta": ("bpe",), "bert": ("wordpiece",), "distilbert": ("wordpiece",),
                "modernbert": ("bpe", "wordpiece")}


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
    return wrap(tok, kind, model_max_length)


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


def load(path: str) -> PreTrainedTokenizerFast:
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"{path}: cannot load a tokenizer: {str(e).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(f"{path}: not a fast (tokenizers-backed) tokenizer")
    if tok.mask_token is None:
        raise TokenizerError(f"{path}: the tokenizer has no mask token, so it cannot serve masked language modeling")
    return tok


def kind_of(tok: PreTrainedTokenizerFast) -> str:
    """'bpe' (byte-level BPE) or 'wordpiece', read from the tokenizer's model."""
    model = type(tok.backend_tokenizer.model).__name__
    return {"BPE": "bpe", "WordPiece": "wordpiece"}.get(model, model.lower())


def check_family(kind: str, family: str) -> None:
    if kind not in FAMILY_KINDS[family]:
        wanted = " or ".join(FAMILY_KINDS[family])
        raise TokenizerError(f"train_tokenizer.kind = {kind!r} does not fit model.family = {family!r}: "
                             f"{family} needs a {wanted} tokenizer; change train_tokenizer.kind or model.family")


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
