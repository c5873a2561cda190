"""grouping.py: tokenizing a corpus split with datasets.map into fixed blocks (group) or one
truncated example per document (line_by_line), compared with straightforward references."""
from __future__ import annotations

import numpy as np
import pytest

from mlmpipe import corpus as C
from mlmpipe import grouping as G

from corpora import make_docs


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    train = make_docs(120, seed=21, sentences=(1, 6))
    val = make_docs(10, seed=22)
    C.write_corpus(iter(train), d, seed=0, validation_fraction=0.0, validation_docs=iter(val))
    return d, train


def reference_blocks(tok, docs, block_size, batch_size):
    """Concatenate each document's ids (with the family's specials), cut into blocks, batch by batch."""
    blocks = []
    for lo in range(0, len(docs), batch_size):
        stream = [t for d in docs[lo:lo + batch_size] for t in tok(d)["input_ids"]]
        n = len(stream) // block_size
        blocks += [stream[i * block_size:(i + 1) * block_size] for i in range(n)]
    return np.asarray(blocks, dtype=np.int32).reshape(-1, block_size)


def as_array(ds):
    return np.asarray(ds["input_ids"], dtype=np.int32)


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_group_equals_reference_concatenation(toks, corpus_dir, tmp_path, kind):
    tok = toks[kind]
    d, docs = corpus_dir
    ds = G.tokenize_split(d / "train.parquet", tok, "group", 32, 1, 1000, tmp_path / "s")
    got = as_array(ds)
    want = reference_blocks(tok, docs, 32, len(docs))  # one batch: the whole stream
    assert got.shape == want.shape and got.shape[1] == 32 and got.shape[0] > 10
    np.testing.assert_array_equal(got, want)
    # specials wrap every document: CLS exactly where each document starts, SEP where each one ends
    stream = got.reshape(-1)
    lengths = np.array([len(tok(x)["input_ids"]) for x in docs])
    starts, ends = np.cumsum(lengths) - lengths, np.cumsum(lengths) - 1
    np.testing.assert_array_equal(np.flatnonzero(stream == tok.cls_token_id), starts[starts < stream.size])
    np.testing.assert_array_equal(np.flatnonzero(stream == tok.sep_token_id), ends[ends < stream.size])
    cls_at = np.flatnonzero(stream == tok.cls_token_id)
    assert (stream[cls_at[1:] - 1] == tok.sep_token_id).all()  # </s><s> / [SEP][CLS] between documents


def test_group_small_batches_carry_the_remainder(bpe_tok, corpus_dir, tmp_path):
    """Batches only bound memory: the remainder of one batch starts the next, so the blocks are those of
    the whole stream cut once (only the final remainder is dropped)."""
    d, docs = corpus_dir
    got = as_array(G.tokenize_split(d / "train.parquet", bpe_tok, "group", 16, 1, 25, tmp_path / "s"))
    np.testing.assert_array_equal(got, reference_blocks(bpe_tok, docs, 16, len(docs)))


def test_group_batch_function_directly(bpe_tok):
    texts = ["The loop value.", "A new list.", "the end"]
    out = G.group_batch({"text": texts}, bpe_tok, 8)["input_ids"]
    want = reference_blocks(bpe_tok, texts, 8, 3)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, want)
    assert G.group_batch({"text": ["x"]}, bpe_tok, 8)["input_ids"].shape == (0, 8)


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_line_by_line_truncates_with_specials(toks, corpus_dir, tmp_path, kind):
    tok = toks[kind]
    d, docs = corpus_dir
    ds = G.tokenize_split(d / "train.parquet", tok, "line_by_line", 24, 1, 1000, tmp_path / "s")
    rows = ds["input_ids"]
    assert len(rows) == len(docs)
    truncated = 0
    for row, doc in zip(rows, docs):
        full = tok(doc)["input_ids"]
        assert len(row) <= 24
        assert row[0] == tok.cls_token_id and row[-1] == tok.sep_token_id
        if len(full) > 24:
            truncated += 1
            assert len(row) == 24 and list(row[:-1]) == full[:23]
        else:
            assert list(row) == full
    assert truncated > 0 and truncated < len(docs)
    # the tokenizer passed in is not changed by the truncation used here
    assert tok.backend_tokenizer.truncation is None


def test_truncation_or_padding_saved_in_tokenizer_json_is_ignored(bpe_dir, corpus_dir, tmp_path):
    """A reused tokenizer (train_tokenizer.from) may carry truncation/padding in tokenizer.json; group
    mode must still see whole documents, and line_by_line only its own block_size."""
    import json
    import shutil

    from mlmpipe import tokenizer as T

    shutil.copytree(bpe_dir, tmp_path / "tok")
    spec = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    spec["truncation"] = {"direction": "Right", "max_length": 12, "strategy": "LongestFirst", "stride": 0}
    spec["padding"] = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
                       "pad_id": 1, "pad_type_id": 0, "pad_token": "<pad>"}
    (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(spec))
    tok = T.load(str(tmp_path / "tok"))
    assert tok.backend_tokenizer.truncation is not None
    d, docs = corpus_dir
    clean = T.load(str(bpe_dir))
    got = as_array(G.tokenize_split(d / "train.parquet", tok, "group", 32, 1, 1000, tmp_path / "s"))
    np.testing.assert_array_equal(got, reference_blocks(clean, docs, 32, len(docs)))
    assert tok.pad_token_id not in got
    rows = G.tokenize_split(d / "train.parquet", tok, "line_by_line", 24, 1, 1000, tmp_path / "l")["input_ids"]
    want = G.tokenize_split(d / "train.parquet", clean, "line_by_line", 24, 1, 1000, tmp_path / "m")["input_ids"]
    assert rows == want and max(len(r) for r in rows) == 24


def test_num_proc_2_equals_1_when_shards_align(bpe_tok, corpus_dir, tmp_path):
    d, _ = corpus_dir  # 120 documents: two shards of 60, batches of 20 -> the same batch boundaries
    one = G.tokenize_split(d / "train.parquet", bpe_tok, "group", 16, 1, 20, tmp_path / "a")
    two = G.tokenize_split(d / "train.parquet", bpe_tok, "group", 16, 2, 20, tmp_path / "b")
    np.testing.assert_array_equal(as_array(one), as_array(two))
    one = G.tokenize_split(d / "train.parquet", bpe_tok, "line_by_line", 16, 1, 20, tmp_path / "c")
    two = G.tokenize_split(d / "train.parquet", bpe_tok, "line_by_line", 16, 2, 20, tmp_path / "d")
    assert one["input_ids"] == two["input_ids"]


def test_num_proc_2_equals_1_unaligned(bpe_tok, corpus_dir, tmp_path):
    d, _ = corpus_dir  # 120 documents: two shards of 60, batches of 25 -> boundaries differ
    one = G.tokenize_split(d / "train.parquet", bpe_tok, "group", 16, 1, 25, tmp_path / "a")
    two = G.tokenize_split(d / "train.parquet", bpe_tok, "group", 16, 2, 25, tmp_path / "b")
    np.testing.assert_array_equal(as_array(one), as_array(two))


def test_split_stats(bpe_tok, corpus_dir, tmp_path):
    d, docs = corpus_dir
    g = G.tokenize_split(d / "train.parquet", bpe_tok, "group", 32, 1, 1000, tmp_path / "g")
    s = G.split_stats(g, 32)
    assert s == {"examples": len(g), "tokens": len(g) * 32, "padding_fraction": 0.0}
    line = G.tokenize_split(d / "train.parquet", bpe_tok, "line_by_line", 64, 1, 1000, tmp_path / "l")
    s = G.split_stats(line, 64)
    tokens = sum(len(r) for r in line["input_ids"])
    assert s["examples"] == len(docs) and s["tokens"] == tokens
    assert s["padding_fraction"] == round(1 - tokens / (len(docs) * 64), 6)
    assert 0 < s["padding_fraction"] < 1


def test_save_and_load_blocks(bpe_tok, corpus_dir, tmp_path):
    d, docs = corpus_dir
    g = G.tokenize_split(d / "train.parquet", bpe_tok, "group", 32, 1, 1000, tmp_path / "g")
    G.save_split(g, tmp_path / "group")
    blocks = G.load_blocks(tmp_path / "group")
    assert isinstance(blocks, np.ndarray) and blocks.dtype == np.int32 and blocks.shape == (len(g), 32)
    np.testing.assert_array_equal(blocks, as_array(g))
    assert G.load_split(tmp_path / "group")[1] is None  # no next-sentence pairs outside sentence_pairs mode

    line = G.tokenize_split(d / "train.parquet", bpe_tok, "line_by_line", 32, 1, 1000, tmp_path / "l")
    G.save_split(line, tmp_path / "line")
    rows = G.load_blocks(tmp_path / "line")
    assert isinstance(rows, list) and len(rows) == len(docs)
    assert all(isinstance(r, np.ndarray) and r.dtype == np.int32 and r.ndim == 1 for r in rows)
    assert [r.tolist() for r in rows] == [list(x) for x in line["input_ids"]]
    G.clear_scratch(tmp_path / "g")
    assert not (tmp_path / "g").exists()


def test_truncate_pair_trims_the_longer_segment():
    assert G.truncate_pair(10, 5, 20) == (10, 5)
    assert G.truncate_pair(30, 5, 20) == (15, 5)
    assert G.truncate_pair(5, 30, 20) == (5, 15)
    assert G.truncate_pair(30, 30, 20) == (10, 10)
    assert sum(G.truncate_pair(31, 2, 17)) == 17


def test_sentence_pairs_in_the_pipeline(wp_tok, corpus_dir, tmp_path):
    """mode sentence_pairs: [CLS] A [SEP] B [SEP] with segment ids; B is A's successor (IsNext, 0) or a
    random other document (NotNext, 1), about half each, the same pairs in every run."""
    d, docs = corpus_dir
    block = 48
    ds = G.tokenize_split(d / "train.parquet", wp_tok, "sentence_pairs", block, 1, 1000, tmp_path / "s1")
    again = G.tokenize_split(d / "train.parquet", wp_tok, "sentence_pairs", block, 1, 1000, tmp_path / "s2")
    assert ds["input_ids"] == again["input_ids"] and ds._fingerprint == again._fingerprint
    G.save_split(ds, tmp_path / "train")
    ids, (types, labels) = G.load_split(tmp_path / "train")
    assert len(ids) == len(types) == len(labels) == len(docs) - 1
    plain = [wp_tok(doc, add_special_tokens=False)["input_ids"] for doc in docs]
    cls, sep = wp_tok.cls_token_id, wp_tok.sep_token_id
    for i, (x, t, label) in enumerate(zip(ids, types, labels)):
        assert len(x) <= block and x[0] == cls and x[-1] == sep
        a_end = int(np.flatnonzero(x == sep)[0])
        a, b = list(x[1:a_end]), list(x[a_end + 1:-1])
        assert (t[:a_end + 1] == 0).all() and (t[a_end + 1:] == 1).all()
        assert plain[i][:len(a)] == a  # segment A is document i (trimmed)
        if label == 0:
            assert plain[i + 1][:len(b)] == b
        else:  # some other document, neither A's nor its successor's
            assert any(plain[j][:len(b)] == b for j in range(len(plain)) if j not in (i, i + 1))
    assert 0.35 < labels.mean() < 0.65
