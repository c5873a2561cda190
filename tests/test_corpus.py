"""sources.py and corpus.py: readers for every format, cleaning, the seeded split, the Parquet writer, downloads
from a real local HTTP server, and Hugging Face datasets loaded from a local directory."""
from __future__ import annotations

import csv
import hashlib
import http.server
import json
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlmpipe import corpus as C
from mlmpipe import sources as S
from mlmpipe import params as P
from mlmpipe.corpus import CorpusError

from corpora import make_docs


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------- readers

def test_builtin_python_docs_is_prose():
    docs = []
    for d in S.builtin_python_docs():
        docs.append(d)
        if len(docs) == 200:
            break
    assert len(docs) == 200
    assert all(isinstance(d, str) and "\n" not in d for d in docs)
    assert sum(len(d) for d in docs) > 10_000


def test_builtin_python_docstrings_are_stdlib_docstrings_without_doctests():
    docs = [d for d in S.builtin_python_docstrings() if len(d) >= 40]
    assert len(docs) > 5_000 and sum(len(d) for d in docs) > 1_000_000  # several times the topics corpus
    assert all("\n" not in d and not d.startswith(">>>") for d in docs)
    import json as stdlib_json
    assert " ".join(stdlib_json.dumps.__doc__.split("\n\n")[0].split()) in docs  # parsed, never imported
    assert list(S.iter_source(S.BUILTIN_DOCSTRINGS, P.FetchCorpus(), None))[:50] == \
        list(S.builtin_python_docstrings())[:50]


def test_txt_line_and_paragraph_modes(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("First line of para one.\nSecond line.\n\n   \nPara two only line.\n\n\nPara three\n", "utf-8")
    lines = list(S.read_txt(str(f), "line", "strict"))
    assert [ln.strip() for ln in lines] == ["First line of para one.", "Second line.", "", "", "Para two only line.",
                                            "", "", "Para three"]
    paras = list(S.read_txt(str(f), "paragraph", "strict"))
    assert paras == ["First line of para one. Second line.", "Para two only line.", "Para three"]


def test_jsonl_json_csv_parquet_with_text_column(tmp_path):
    rows = [{"id": i, "body": f"document number {i}", "other": "x"} for i in range(5)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", "utf-8")
    (tmp_path / "a.json").write_text(json.dumps(rows), "utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"data": rows}), "utf-8")
    (tmp_path / "c.json").write_text(json.dumps({"body": [r["body"] for r in rows]}), "utf-8")
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "body", "other"])
        w.writeheader()
        w.writerows(rows)
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "body": [r["body"] for r in rows]}),
                   tmp_path / "a.parquet")
    want = [r["body"] for r in rows]
    for name in ("a.jsonl", "a.json", "b.json", "c.json", "a.csv", "a.parquet"):
        got = list(S.read_file(str(tmp_path / name), "auto", "paragraph", "body", "strict"))
        assert got == want, name


def test_csv_with_quoted_multiline_field(tmp_path):
    f = tmp_path / "q.csv"
    with open(f, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        w.writerow(["line one\nline two, with comma"])
        w.writerow(["plain"])
    assert list(S.read_csv(str(f), "text", "strict")) == ["line one\nline two, with comma", "plain"]


def test_format_forced_and_detected():
    assert S._format_of("x/data.ndjson", "auto") == "jsonl"
    assert S._format_of("https://h/x.pq?raw=1", "auto") == "parquet"
    assert S._format_of("x/README", "auto") == "txt"
    assert S._format_of("x/data.txt", "csv") == "csv"


@pytest.mark.parametrize("name,content", [
    ("a.jsonl", '{"body": "x"}\n'),
    ("a.json", '[{"body": "x"}]'),
    ("a.csv", "body,id\nx,1\n"),
])
def test_missing_column_error(tmp_path, name, content):
    f = tmp_path / name
    f.write_text(content, "utf-8")
    with pytest.raises(CorpusError) as e:
        list(S.read_file(str(f), "auto", "paragraph", "text", "strict"))
    msg = one_line(e)
    assert str(f) in msg and "'text'" in msg and "body" in msg


def test_missing_column_parquet(tmp_path):
    f = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x"]}), f)
    with pytest.raises(CorpusError) as e:
        list(S.read_parquet(str(f), "text"))
    assert "no column 'text'" in one_line(e) and "body" in one_line(e)


def test_invalid_jsonl_line(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "ok"}\n{"text": \n', "utf-8")
    with pytest.raises(CorpusError) as e:
        list(S.read_jsonl(str(f), "text", "strict"))
    assert "line 2" in one_line(e)


def test_non_utf8_names_file_and_byte_offset(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"hello world\ncaf\xe9 au lait\n")
    with pytest.raises(CorpusError) as e:
        list(S.read_txt(str(f), "line", "strict"))
    msg = one_line(e)
    assert str(f) in msg
    assert "byte offset 15" in msg  # 12 bytes of line one + "caf"
    assert "errors: replace" in msg
    lines = list(S.read_txt(str(f), "line", "replace"))
    assert lines[1].rstrip("\n") == "caf\ufffd au lait"


def test_non_utf8_in_json_offset(tmp_path):
    f = tmp_path / "a.json"
    raw = b'[{"text": "ab\xffc"}]'
    f.write_bytes(raw)
    with pytest.raises(CorpusError) as e:
        list(S.read_json(str(f), "text", "strict"))
    bad = raw.index(b"\xff")
    assert f"byte offset {bad}" in one_line(e)
    assert list(S.read_json(str(f), "text", "replace")) == ["ab\ufffdc"]


def test_binary_file_detected(tmp_path):
    f = tmp_path / "blob.txt"
    f.write_bytes(b"some text\nmore\x00\x01\x02 bytes\n")
    with pytest.raises(CorpusError) as e:
        list(S.read_txt(str(f), "paragraph", "replace"))  # even with errors: replace
    msg = one_line(e)
    assert "looks binary" in msg and str(f) in msg and "byte offset 14" in msg


def test_parquet_not_parquet(tmp_path):
    f = tmp_path / "bad.parquet"
    f.write_bytes(b"not parquet at all")
    with pytest.raises(CorpusError) as e:
        list(S.read_parquet(str(f), "text"))
    assert str(f) in str(e.value)


def test_iter_source_glob_and_missing(tmp_path):
    (tmp_path / "a.txt").write_text("alpha\n\nbeta\n", "utf-8")
    (tmp_path / "b.txt").write_text("gamma\n", "utf-8")
    p = P.FetchCorpus()
    assert list(S.iter_source(str(tmp_path / "*.txt"), p, tmp_path)) == ["alpha", "beta", "gamma"]
    with pytest.raises(CorpusError) as e:
        S.iter_source(str(tmp_path / "*.md"), p, tmp_path)
    assert "glob matched nothing" in one_line(e)
    with pytest.raises(CorpusError):
        S.iter_source(str(tmp_path / "nope.txt"), p, tmp_path)
    with pytest.raises(CorpusError) as e:
        S.iter_source("builtin:wikipedia", p, tmp_path)
    assert S.BUILTIN in one_line(e)


# ---------------------------------------------------------------------------------------- cleaning/split

def test_clean_min_chars_dedupe_max_documents():
    docs = ["  short ", "a long enough document", "a long enough document", "  a long enough document  ",
            "another long document", "third long document here", "fourth"]
    assert list(C.clean(docs, min_chars=10, dedupe=True, max_documents=None)) == [
        "a long enough document", "another long document", "third long document here"]
    assert list(C.clean(docs, min_chars=10, dedupe=False, max_documents=None)) == [
        "a long enough document"] * 3 + ["another long document", "third long document here"]
    assert list(C.clean(docs, min_chars=10, dedupe=True, max_documents=2)) == [
        "a long enough document", "another long document"]
    # min_chars 0 still drops empty documents
    assert list(C.clean(["", "   ", "x"], min_chars=0, dedupe=True, max_documents=None)) == ["x"]


def test_clean_is_lazy():
    def endless():
        i = 0
        while True:
            yield f"document {i} " * 3
            i += 1
    assert len(list(C.clean(endless(), 5, True, 7))) == 7


def test_is_validation_deterministic_and_fraction():
    docs = [f"document number {i} with some words" for i in range(4000)]
    a = [C.is_validation(d, 42, 0.1) for d in docs]
    b = [C.is_validation(d, 42, 0.1) for d in reversed(docs)][::-1]
    assert a == b  # a pure function of (seed, document): order does not matter
    assert 0.08 < sum(a) / len(a) < 0.12
    other_seed = [C.is_validation(d, 43, 0.1) for d in docs]
    assert other_seed != a
    assert not any(C.is_validation(d, 42, 0.0) for d in docs)


def test_write_corpus_split_and_stats(tmp_path):
    docs = make_docs(200, seed=3)
    stats = C.write_corpus(iter(docs), tmp_path, seed=7, validation_fraction=0.2)
    train = list(C.read_split(tmp_path, "train"))
    val = list(C.read_split(tmp_path, "validation"))
    assert sorted(train + val) == sorted(docs)
    assert val == [d for d in docs if C.is_validation(d, 7, 0.2)]
    assert train == [d for d in docs if not C.is_validation(d, 7, 0.2)]
    assert stats["train_documents"] == len(train) and stats["validation_documents"] == len(val)
    assert stats["documents"] == len(docs)
    assert stats["characters"] == sum(len(d) for d in docs)
    assert stats["bytes"] == sum(len(d.encode()) for d in docs)
    assert stats["train_characters"] == sum(len(d) for d in train)

    def digest(split):
        h = hashlib.sha256()
        for d in split:
            b = d.encode()
            h.update(len(b).to_bytes(8, "little") + b)
        return h.hexdigest()
    assert stats["train_sha256"] == digest(train)
    assert stats["validation_sha256"] == digest(val)
    assert stats["content_sha256"] == hashlib.sha256((digest(train) + digest(val)).encode()).hexdigest()
    # the same input gives the same content hash
    (tmp_path / "again").mkdir()
    again = C.write_corpus(iter(docs), tmp_path / "again", seed=7, validation_fraction=0.2)
    assert again["content_sha256"] == stats["content_sha256"]


def test_train_extra_goes_to_train_only_and_never_repeats_a_validation_document(tmp_path):
    docs = make_docs(200, seed=3)
    val_docs = [d for d in docs if C.is_validation(d, 7, 0.2)]
    extra_docs = [f"an extra training document number {i}" for i in range(50)] + val_docs[:3] + docs[:2]
    seen = set()
    main = C.clean(iter(docs), 10, True, None, seen)
    extra = C.clean(iter(extra_docs), 10, True, None, seen)
    stats = C.write_corpus(main, tmp_path, seed=7, validation_fraction=0.2, extra_train_docs=extra)
    train = list(C.read_split(tmp_path, "train"))
    assert list(C.read_split(tmp_path, "validation")) == val_docs  # extras never change the validation split
    assert train == [d for d in docs if d not in val_docs] + extra_docs[:50]  # duplicates of either split dropped
    assert stats["train_extra_documents"] == 50 and stats["train_documents"] == len(train)
    with pytest.raises(P.ParamError) as e:
        P.parse(P.FetchCorpus, "fetch_corpus", {"train_extra": ["builtin:python-docstrings", 3]})
    assert one_line(e) == ("fetch_corpus.train_extra[1] = 3: must be a source string (a builtin, file path or "
                           "glob, http(s) URL or hf:<dataset>)")
    with pytest.raises(CorpusError) as e:
        S.iter_source(str(tmp_path / "nope.txt"), P.FetchCorpus(), tmp_path, "fetch_corpus.train_extra[0]")
    assert one_line(e).startswith("fetch_corpus.train_extra[0] = ")


def test_write_corpus_non_ascii_bytes_vs_characters(tmp_path):
    docs = ["café crème brûlée " * 3, "naïve résumé façade " * 3, "plain ascii document here"]
    stats = C.write_corpus(iter(docs), tmp_path, seed=0, validation_fraction=0.0, validation_docs=iter(["ünïcödé"]))
    assert stats["characters"] == sum(map(len, docs)) + len("ünïcödé")
    assert stats["bytes"] == sum(len(d.encode()) for d in docs) + len("ünïcödé".encode())
    assert stats["bytes"] > stats["characters"]
    assert list(C.read_split(tmp_path, "validation")) == ["ünïcödé"]
    assert list(C.read_split(tmp_path, "train")) == docs


def test_write_corpus_empty_errors(tmp_path):
    with pytest.raises(CorpusError) as e:
        C.write_corpus(iter([]), tmp_path, seed=0, validation_fraction=0.1)
    assert "empty" in one_line(e) and "min_chars" in one_line(e)
    (tmp_path / "v").mkdir()
    with pytest.raises(CorpusError) as e:
        C.write_corpus(iter(["one document"]), tmp_path / "v", seed=0, validation_fraction=0.0)
    assert "validation" in one_line(e)


# ---------------------------------------------------------------------------------------- download

class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        if self.path == "/dropped.txt":  # the connection drops after part of the announced body
            self.send_header("Content-Length", str(len(body) * 10))
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_server():
    body = ("\n\n".join(make_docs(50, seed=5)) + "\n").encode()
    big = b"x" * (3 * 2**20)
    _Handler.files = {"/corpus.txt": body, "/big.txt": big, "/dropped.txt": body}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", body
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(5)


def test_download_with_correct_sha256(http_server, tmp_path):
    base, body = http_server
    dest = S.download(base + "/corpus.txt", tmp_path / "corpus.txt", 10, 2**20, hashlib.sha256(body).hexdigest())
    assert dest.read_bytes() == body
    # upper-case hex is accepted too
    S.download(base + "/corpus.txt", tmp_path / "c2.txt", 10, 2**20, hashlib.sha256(body).hexdigest().upper())


def test_download_sha256_mismatch_deletes_file(http_server, tmp_path):
    base, body = http_server
    with pytest.raises(CorpusError) as e:
        S.download(base + "/corpus.txt", tmp_path / "corpus.txt", 10, 2**20, "0" * 64)
    msg = one_line(e)
    assert "checksum mismatch" in msg and hashlib.sha256(body).hexdigest() in msg
    assert not (tmp_path / "corpus.txt").exists()


def test_download_size_limit(http_server, tmp_path):
    base, _ = http_server
    with pytest.raises(CorpusError) as e:
        S.download(base + "/big.txt", tmp_path / "big.txt", 10, 2**20, None)
    assert "max_download_mb" in one_line(e)
    assert not (tmp_path / "big.txt").exists()


def test_download_404(http_server, tmp_path):
    base, _ = http_server
    with pytest.raises(CorpusError) as e:
        S.download(base + "/missing.txt", tmp_path / "missing.txt", 10, 2**20, None)
    msg = one_line(e)
    assert "download failed" in msg and "missing.txt" in msg
    assert not (tmp_path / "missing.txt").exists()


def test_download_dropped_connection_is_not_a_short_corpus(http_server, tmp_path):
    base, body = http_server
    with pytest.raises(CorpusError) as e:
        S.download(base + "/dropped.txt", tmp_path / "dropped.txt", 10, 2**20, None)
    msg = one_line(e)
    assert "truncated" in msg and f"got {len(body)} of {len(body) * 10} bytes" in msg
    assert not (tmp_path / "dropped.txt").exists()


def test_iter_source_url_end_to_end(http_server, tmp_path):
    base, body = http_server
    p = P.parse(P.FetchCorpus, "fetch_corpus", {"source": base + "/corpus.txt",
                                                "sha256": hashlib.sha256(body).hexdigest()})
    docs = list(S.iter_source(p.source, p, tmp_path))
    assert docs == make_docs(50, seed=5)


# ---------------------------------------------------------------------------------------- Hugging Face datasets

@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # The libraries read the variables at import time; make sure they see them now.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)


def test_read_hub_local_dataset_directory(tmp_path, hub_offline):
    d = tmp_path / "my_dataset"
    d.mkdir()
    (d / "part-0.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i}", "n": i}) for i in range(3)) + "\n")
    (d / "part-1.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i}", "n": i}) for i in range(3, 5)) + "\n")
    got = list(S.read_hub(str(d), None, "train", None, "text"))
    assert sorted(got) == [f"doc {i}" for i in range(5)]
    with pytest.raises(CorpusError) as e:
        list(S.read_hub(str(d), None, "train", None, "body"))
    assert "'body'" in one_line(e) and "text" in one_line(e)
    p = P.parse(P.FetchCorpus, "fetch_corpus", {"source": f"hf:{d}"})
    assert sorted(S.iter_source(p.source, p, tmp_path)) == sorted(got)


def test_read_hub_unknown_dataset_is_one_line(hub_offline):
    with pytest.raises(CorpusError) as e:
        list(S.read_hub("nobody-mlmpipe/no-such-dataset", None, "train", None, "text"))
    msg = one_line(e)
    assert msg.startswith("fetch_corpus.source = 'hf:nobody-mlmpipe/no-such-dataset'")
