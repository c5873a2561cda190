"""model.py: configs for the four families from a real tokenizer, presets, seeded scratch builds,
refusals when loading a checkpoint, and the sparse MLM head against the full model."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForMaskedLM

from mlmpipe import model as M
from mlmpipe import model_info
from mlmpipe.families import FAMILIES as RECORDS
from mlmpipe.model import ModelError
from mlmpipe.params import ParamError

from conftest import FAMILIES, FAMILY_KIND, tiny_model_params


@pytest.fixture(scope="module")
def saved_roberta(bpe_tok, tmp_path_factory):
    """A tiny RoBERTa checkpoint for block_size 32 (34 positions), saved like build_model does."""
    d = tmp_path_factory.mktemp("roberta_ckpt")
    model = M.build_scratch(tiny_model_params("roberta"), bpe_tok, 32, seed=0)
    model.save_pretrained(d, safe_serialization=True)
    return d


@pytest.mark.parametrize("family", FAMILIES)
def test_make_config_per_family(toks, family):
    tok = toks[FAMILY_KIND[family]]
    cfg = M.make_config(tiny_model_params(family), tok, 64)
    assert cfg.model_type == family
    assert cfg.vocab_size == len(tok)
    assert cfg.pad_token_id == tok.pad_token_id
    get = lambda *names: next(getattr(cfg, n) for n in names if hasattr(cfg, n))  # noqa: E731
    assert get("num_hidden_layers", "n_layers") == 2
    assert get("hidden_size", "dim") == 32
    assert get("num_attention_heads", "n_heads") == 2
    assert get("intermediate_size", "hidden_dim") == 64
    fam = RECORDS[family]
    assert cfg.max_position_embeddings == max(64 + fam.position_offset, fam.min_positions)


def test_roberta_positions_and_explicit_max_positions(bpe_tok):
    assert M.make_config(tiny_model_params("roberta"), bpe_tok, 128).max_position_embeddings == 130
    cfg = M.make_config(tiny_model_params("roberta", max_position_embeddings=514), bpe_tok, 128)
    assert cfg.max_position_embeddings == 514
    with pytest.raises(ParamError) as e:
        M.make_config(tiny_model_params("roberta", max_position_embeddings=129), bpe_tok, 128)
    assert "needs at least 130" in str(e.value) and "\n" not in str(e.value)


def test_roberta_model_runs_at_full_block_size(bpe_tok, model_section):
    assert model_section.family == "roberta"
    model = M.build_scratch(model_section, bpe_tok, 32, seed=0).eval()
    ids = torch.full((1, 32), 100)
    ids[0, 0], ids[0, -1] = bpe_tok.cls_token_id, bpe_tok.sep_token_id
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, 32, len(bpe_tok))


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
@pytest.mark.parametrize("family", FAMILIES)
def test_presets_win_over_explicit_dims(family, preset):
    m = tiny_model_params(family, preset=preset)
    layers, hidden, heads, inter = M.dims(m)
    assert (layers, hidden, heads, inter) == RECORDS[family].presets[preset]
    assert hidden % heads == 0
    assert M.dims(tiny_model_params(family)) == (2, 32, 2, 64)


def test_preset_base_shapes():
    assert M.dims(tiny_model_params("bert", preset="base")) == (12, 768, 12, 3072)
    assert M.dims(tiny_model_params("distilbert", preset="base")) == (6, 768, 12, 3072)
    assert M.dims(tiny_model_params("modernbert", preset="base"))[:2] == (22, 768)


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_build_scratch_is_deterministic(toks, family):
    tok = toks[FAMILY_KIND[family]]
    a = M.build_scratch(tiny_model_params(family), tok, 32, seed=3).state_dict()
    b = M.build_scratch(tiny_model_params(family), tok, 32, seed=3).state_dict()
    c = M.build_scratch(tiny_model_params(family), tok, 32, seed=4).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_load_pretrained_round_trip(saved_roberta, bpe_tok):
    model = M.load_pretrained(str(saved_roberta), "roberta", bpe_tok, 32, False, False)
    ref = AutoModelForMaskedLM.from_pretrained(saved_roberta)
    sa, sb = model.state_dict(), ref.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_pretrained_block_too_big_for_positions(saved_roberta, bpe_tok):
    M.load_pretrained(str(saved_roberta), "roberta", bpe_tok, 32, False, False)  # 34 positions: fits
    with pytest.raises(ModelError) as e:
        M.load_pretrained(str(saved_roberta), "roberta", bpe_tok, 33, False, False)
    msg = str(e.value)
    assert "\n" not in msg
    assert "tokenize_group.block_size = 33" in msg and "block_size <= 32" in msg


def test_load_pretrained_vocab_mismatch(saved_roberta, bpe_dir, tmp_path):
    from mlmpipe import tokenizer as T

    bigger = T.load(str(bpe_dir))
    bigger.add_tokens(["zymurgy", "quokka", "xylophone"])
    with pytest.raises(ModelError) as e:
        M.load_pretrained(str(saved_roberta), "roberta", bigger, 32, False, False)
    msg = str(e.value)
    assert "\n" not in msg and f"vocabulary of {len(bigger) - 3}" in msg and "resize_embeddings" in msg
    model = M.load_pretrained(str(saved_roberta), "roberta", bigger, 32, True, False)
    assert model.get_input_embeddings().num_embeddings == len(bigger)
    assert model.get_output_embeddings().weight.shape[0] == len(bigger)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[0, len(bigger) - 1, 2]])).logits
    assert out.shape == (1, 3, len(bigger))


def test_load_pretrained_family_mismatch(saved_roberta, bpe_tok):
    with pytest.raises(ModelError) as e:
        M.load_pretrained(str(saved_roberta), "bert", bpe_tok, 32, False, False)
    msg = str(e.value)
    assert "is a roberta model" in msg and "model.family = 'bert'" in msg and "\n" not in msg


def test_load_pretrained_missing_dir(tmp_path, bpe_tok):
    with pytest.raises(ModelError) as e:
        M.load_pretrained(str(tmp_path / "nope"), "roberta", bpe_tok, 32, False, False)
    assert "cannot load a model config" in str(e.value) and "\n" not in str(e.value)


def test_load_pretrained_without_weights_is_one_line(saved_roberta, bpe_tok, tmp_path):
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_bytes((saved_roberta / "config.json").read_bytes())
    with pytest.raises(ModelError) as e:
        M.load_pretrained(str(tmp_path / "config_only"), "roberta", bpe_tok, 32, False, False)
    assert "\n" not in str(e.value) and "config_only" in str(e.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_param_counts_and_describe(toks, family):
    tok = toks[FAMILY_KIND[family]]
    model = M.build_scratch(tiny_model_params(family), tok, 32, seed=0)
    c = model_info.param_counts(model)
    assert c["params_total"] == sum(p.numel() for p in model.parameters())
    assert c["params_embedding"] + c["params_non_embedding"] == c["params_total"]
    assert c["params_embedding"] >= len(tok) * 32  # the token embeddings at least
    assert c["params_non_embedding"] > 0
    d = model_info.describe(model)
    assert d["family"] == family and d["vocab_size"] == len(tok)
    assert (d["layers"], d["hidden"], d["heads"], d["intermediate"]) == (2, 32, 2, 64)
    assert d["architecture"].endswith("ForMaskedLM")


@pytest.mark.parametrize("family", FAMILIES)
def test_sparse_head_equals_full_model_logits(toks, family):
    tok = toks[FAMILY_KIND[family]]
    model = M.build_scratch(tiny_model_params(family), tok, 32, seed=1).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(tok), (3, 16), generator=g)
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    attn = torch.ones_like(ids)
    ids[2, 12:], attn[2, 12:] = tok.pad_token_id, 0  # one padded row
    sel = torch.zeros_like(ids, dtype=torch.bool)
    sel[0, [1, 5, 9]] = sel[1, [2, 14]] = sel[2, [3, 11]] = True
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attn).logits
        hidden = M.encoder_hidden(model, ids, attn)
        sparse = M.mlm_logits(model, hidden[sel])
        dense = M.mlm_logits(model, hidden)
    assert sparse.shape == (int(sel.sum()), len(tok))
    torch.testing.assert_close(sparse, full[sel], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense, full, rtol=1e-5, atol=1e-5)


def test_mlm_logits_unknown_type(bpe_tok):
    model = M.build_scratch(tiny_model_params("roberta"), bpe_tok, 32, seed=0)
    model.config.model_type = "gpt2"
    with pytest.raises(ModelError):
        M.mlm_logits(model, torch.zeros(1, 32))


def test_input_names(toks):
    names = {f: M.input_names(M.build_scratch(tiny_model_params(f), toks[FAMILY_KIND[f]], 32, 0)) for f in FAMILIES}
    assert names["bert"] == ["input_ids", "token_type_ids", "attention_mask"]
    assert names["roberta"] == ["input_ids", "token_type_ids", "attention_mask"]
    assert names["distilbert"] == ["input_ids", "attention_mask"]
    assert names["modernbert"] == ["input_ids", "attention_mask"]
