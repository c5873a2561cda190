"""One record per model family: everything the pipeline knows about RoBERTa, BERT, DistilBERT and ModernBERT.

``FAMILIES`` (in the order params list them) maps ``model.family`` to a ``Family``: the tokenizer kinds it takes,
its presets, how to build its transformers config, where its masked-LM head and its transformer layers are,
and its position facts. params (allowed names, tokenizer kinds, next-sentence), model (configs, presets,
positions, MLM head), sharding (layers) and fill_mask (prompt length limit) all read it, so a new family is
one more record here.

Cheap to import: params imports it to validate params.yaml before torch or transformers load, so the config
builders import transformers inside.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # params imports this module
    from .params import Model

Dims = tuple[int, int, int, int]  # (layers, hidden, heads, intermediate)

PRESET_NAMES = ("tiny", "small", "base")  # model.preset; every family has a shape for each


@dataclass(frozen=True)
class Family:
    name: str  # model.family, and the model_type of the family's transformers config
    kinds: tuple[str, ...]  # train_tokenizer.kind values it takes; the first is the usual one
    presets: Mapping[str, Dims]  # model.preset -> dims; "base" is the family's published base shape
    # (model section, tokenizer, dims, max_position_embeddings) -> a transformers config for a scratch model
    config: Callable[[Any, Any, Dims, int], Any]
    # (model, hidden states of any leading shape) -> MLM logits through the model's own head
    mlm_head: Callable[[Any, Any], Any]
    # model -> its transformer layers, in order: the units pretrain.fsdp shards one by one
    layers: Callable[[Any], Any]
    # positions taken before the first token: learned absolute positions of RoBERTa start at padding_idx + 1,
    # so it needs block_size + 2 of them, and a model's max_position_embeddings - 2 is its longest input
    position_offset: int = 0
    # the least max_position_embeddings a scratch config gets, whatever block_size needs
    min_positions: int = 0
    # whether a checkpoint's max_position_embeddings bounds tokenize_group.block_size (learned absolute positions;
    # ModernBERT's are rotary)
    learned_positions: bool = True
    # whether model.next_sentence (BertForPreTraining: MLM + next-sentence prediction) is available
    next_sentence: bool = False


def _ids(tok) -> dict:
    return dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id)


def _roberta_config(m: Model, tok, dims: Dims, positions: int):
    from transformers import RobertaConfig

    layers, hidden, heads, inter = dims
    return RobertaConfig(**_ids(tok), bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                         hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=inter, hidden_dropout_prob=m.dropout,
                         attention_probs_dropout_prob=m.dropout, max_position_embeddings=positions,
                         type_vocab_size=1)


def _bert_config(m: Model, tok, dims: Dims, positions: int):
    from transformers import BertConfig

    layers, hidden, heads, inter = dims
    return BertConfig(**_ids(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=inter, hidden_dropout_prob=m.dropout,
                      attention_probs_dropout_prob=m.dropout, max_position_embeddings=positions)


def _distilbert_config(m: Model, tok, dims: Dims, positions: int):
    from transformers import DistilBertConfig

    layers, hidden, heads, inter = dims
    return DistilBertConfig(**_ids(tok), dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=inter,
                            dropout=m.dropout, attention_dropout=m.dropout, max_position_embeddings=positions)


def _modernbert_config(m: Model, tok, dims: Dims, positions: int):
    from transformers import ModernBertConfig

    layers, hidden, heads, inter = dims
    return ModernBertConfig(**_ids(tok), bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                            cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=inter, attention_dropout=m.dropout, mlp_dropout=m.dropout,
                            embedding_dropout=m.dropout, max_position_embeddings=positions)


def _roberta_head(model, hidden):
    return model.lm_head(hidden)


def _bert_head(model, hidden):  # BertForMaskedLM's head, or the MLM half of BertForPreTraining's
    return model.cls.predictions(hidden)


def _distilbert_head(model, hidden):
    return model.vocab_projector(model.vocab_layer_norm(model.activation(model.vocab_transform(hidden))))


def _modernbert_head(model, hidden):
    return model.decoder(model.head(hidden))


def _encoder_layers(model):  # BERT, RoBERTa
    return model.base_model.encoder.layer


def _distilbert_layers(model):
    return model.base_model.transformer.layer


def _modernbert_layers(model):
    return model.base_model.layers


def _presets(tiny: Dims, small: Dims, base: Dims) -> Mapping[str, Dims]:
    return MappingProxyType(dict(zip(PRESET_NAMES, (tiny, small, base))))


_BERT_TINY, _BERT_SMALL, _BERT_BASE = (2, 128, 2, 512), (4, 512, 8, 2048), (12, 768, 12, 3072)

FAMILIES: Mapping[str, Family] = MappingProxyType({f.name: f for f in (
    Family("roberta", kinds=("bpe",), presets=_presets(_BERT_TINY, _BERT_SMALL, _BERT_BASE),
           config=_roberta_config, mlm_head=_roberta_head, layers=_encoder_layers, position_offset=2),
    Family("bert", kinds=("wordpiece",), presets=_presets(_BERT_TINY, _BERT_SMALL, _BERT_BASE),
           config=_bert_config, mlm_head=_bert_head, layers=_encoder_layers, next_sentence=True),
    Family("distilbert", kinds=("wordpiece",), presets=_presets(_BERT_TINY, _BERT_SMALL, (6, 768, 12, 3072)),
           config=_distilbert_config, mlm_head=_distilbert_head, layers=_distilbert_layers),
    Family("modernbert", kinds=("bpe", "wordpiece"),
           presets=_presets((2, 128, 2, 256), (6, 512, 8, 768), (22, 768, 12, 1152)),
           config=_modernbert_config, mlm_head=_modernbert_head, layers=_modernbert_layers, min_positions=512,
           learned_positions=False),
)})
NAMES = tuple(FAMILIES)  # the allowed model.family values
