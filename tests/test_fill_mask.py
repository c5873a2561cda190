"""fill_mask.py: the fill-mask pipeline on tiny saved models (BPE and WordPiece), the summary and
the Markdown report."""
from __future__ import annotations

import re

import pytest

from mlmpipe import fill_mask as F
from mlmpipe import model as M
from mlmpipe import params as P
from mlmpipe import tokenizer as T

from conftest import tiny_model_params


def save_model_dir(tok_dir, family, root):
    """A model directory like the pretrain stage writes: the model and its tokenizer side by side."""
    tok = T.load(str(tok_dir))
    model = M.build_scratch(tiny_model_params(family), tok, 32, seed=0)
    model.save_pretrained(root, safe_serialization=True)
    tok.model_max_length = 32
    tok.model_input_names = M.input_names(model)
    tok.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def roberta_dir(bpe_dir, tmp_path_factory):
    return save_model_dir(bpe_dir, "roberta", tmp_path_factory.mktemp("roberta_model"))


@pytest.fixture(scope="module")
def bert_dir(wp_dir, tmp_path_factory):
    return save_model_dir(wp_dir, "bert", tmp_path_factory.mktemp("bert_model"))


PROMPTS = (P.Prompt('The "<mask>" statement terminates the nearest enclosing loop.', ("break",)),
           P.Prompt("A <mask> returns a value.", ()),
           P.Prompt("Calling the <mask> | creates a list.", ("function", "zzqxjv")))


def whole_words(tok, predictions) -> list[tuple[int, str]]:
    """(rank, token) of the predictions that are whole words of one token, each string at its first rank."""
    words = [p["token"] for p in predictions]
    return [(i + 1, w) for i, w in enumerate(words)
            if w.isalpha() and w not in words[:i] and F.single_token(tok, w)]


@pytest.mark.parametrize("which", ["roberta_dir", "bert_dir"])
def test_run_prompts_returns_top_k_per_prompt(request, which):
    d = request.getfixturevalue(which)
    tok = T.load(str(d))
    # the untrained model never predicts "break": add an answer it does predict, below the top
    first = F.run_prompts(str(d), PROMPTS[:1], 4)[0]
    rank, word = next((r, w) for r, w in whole_words(tok, first["predictions"]) if r > 1)
    prompts = (P.Prompt(PROMPTS[0].text, ("break", word)),) + PROMPTS[1:]
    rows = F.run_prompts(str(d), prompts, 4)  # WordPiece: <mask> must become [MASK] or the pipeline refuses
    assert len(rows) == len(prompts)
    for row, pr in zip(rows, prompts):
        assert row["text"] == pr.text and row["answers"] == list(pr.answers)
        assert len(row["predictions"]) == 4
        probs = [x["prob"] for x in row["predictions"]]
        assert probs == sorted(probs, reverse=True) and all(0 <= x <= 1 for x in probs)
        assert all(isinstance(x["token"], str) and x["token"] == x["token"].strip() for x in row["predictions"])
    assert rows[0]["predictions"] == first["predictions"]  # deterministic
    assert rows[0]["rank"] == rank and rows[0]["predictions"][rank - 1]["token"] == word
    assert rows[1]["rank"] is None  # no answers
    assert rows[0]["unreachable"] == []          # "break" and the predicted word are one token each
    assert rows[2]["unreachable"] == ["zzqxjv"]  # not in the tiny vocabulary


@pytest.mark.parametrize("which", ["roberta_dir", "bert_dir"])
def test_rank_of_expected_answer(request, which):
    d = request.getfixturevalue(which)
    first = F.run_prompts(str(d), PROMPTS[:1], 5)[0]
    words = [p["token"] for p in first["predictions"]]
    second_best, third_best = words[1], words[2]
    assert second_best != words[0] and third_best not in words[:2]
    prompt = P.Prompt(PROMPTS[0].text, ("nothing-like-this", third_best, second_best))
    row = F.run_prompts(str(d), (prompt,), 3)[0]
    assert row["predictions"] == first["predictions"][:3]  # deterministic
    assert row["rank"] == 2  # the best-ranked of the answers, whatever their order in the prompt
    assert F.run_prompts(str(d), (P.Prompt(prompt.text, (third_best,)),), 2)[0]["rank"] is None


@pytest.mark.parametrize("which", ["roberta_dir", "bert_dir"])
def test_answer_split_into_pieces_is_a_miss_and_unreachable(request, which):
    """An answer the tokenizer cuts into several pieces (BPE pieces, WordPiece ``##`` pieces) cannot come
    out of one mask: it is never scored as a hit, even when its first piece is a prediction, and the
    report flags it. The WordPiece tokenizer turns an unknown word into one ``[UNK]`` instead, so the
    answer here is built from pieces the vocabulary has: a predicted word plus a suffix."""
    d = request.getfixturevalue(which)
    tok = T.load(str(d))
    first = F.run_prompts(str(d), PROMPTS[:1], 5)[0]
    cases = []
    for rank, word in whole_words(tok, first["predictions"]):
        for suffix in ("s", "loop", "ing"):
            answer = word + suffix
            spaced = tok.tokenize(" " + answer)
            if (len(spaced) > 1 and len(tok.tokenize(answer)) > 1 and tok.unk_token not in spaced
                    and tok.convert_tokens_to_string(spaced[:1]).strip() == word):
                cases.append((rank, word, answer, spaced))
    assert cases, first["predictions"]
    rank, word, answer, pieces = cases[0]  # e.g. "yields" + "s" = ["yields", "##s"], "yields" predicted
    if which == "bert_dir":
        assert pieces[1].startswith("##")
    row = F.run_prompts(str(d), (P.Prompt(PROMPTS[0].text, (answer,)),), 5)[0]
    assert row["predictions"][rank - 1]["token"] == word
    assert row["rank"] is None
    assert row["unreachable"] == [answer]
    both = F.run_prompts(str(d), (P.Prompt(PROMPTS[0].text, (answer, word)),), 5)[0]
    assert both["rank"] == rank and both["unreachable"] == [answer]  # the one-token answer still scores
    s = F.summarize([row], 5)
    assert s["cloze_top1_hits"] == s["cloze_topk_hits"] == 0
    assert f"(not a single token: {answer})" in F.markdown([row], s)


@pytest.mark.parametrize("which", ["roberta_dir", "bert_dir"])
def test_prompt_length_limit_is_the_block_size(request, which):
    """Both models were built for block_size 32 (RoBERTa with 34 positions: its positions start at
    padding_idx + 1): a prompt of 32 tokens runs, one of 33 is refused in one line naming the limit."""
    from transformers import AutoConfig

    d = request.getfixturevalue(which)
    assert F.max_positions(AutoConfig.from_pretrained(d)) == 32
    tok = T.load(str(d))
    text = lambda k: "The <mask>" + " loop" * k + "."  # noqa: E731
    length = lambda k: len(tok(text(k).replace("<mask>", tok.mask_token))["input_ids"])  # noqa: E731
    k = next(k for k in range(64) if length(k) >= 32)
    assert length(k) == 32 and length(k + 1) == 33
    assert len(F.run_prompts(str(d), (P.Prompt(text(k)),), 2)) == 1
    with pytest.raises(F.FillMaskError) as e:
        F.run_prompts(str(d), (P.Prompt(text(k + 1)),), 2)
    assert "33 tokens, more than the model's 32 positions" in str(e.value) and "\n" not in str(e.value)


def test_lowercase_tokenizer_matches_answers_case_insensitively(docs, tmp_path):
    tok = T.train(iter(docs), "wordpiece", 300, 2, True, 64)
    tok.save_pretrained(tmp_path / "tok")
    d = save_model_dir(tmp_path / "tok", "bert", tmp_path / "model")
    top = F.run_prompts(str(d), (P.Prompt("The <mask> statement.", ()),), 1)[0]["predictions"][0]["token"]
    row = F.run_prompts(str(d), (P.Prompt("The <mask> statement.", (top.upper(),)),), 1)[0]
    assert row["rank"] == 1


def test_single_token(bpe_tok, wp_tok):
    assert F.single_token(bpe_tok, "break") and F.single_token(wp_tok, "break")
    assert F.single_token(bpe_tok, ".")
    assert not F.single_token(bpe_tok, "zzqxjv") and not F.single_token(wp_tok, "zzqxjv")


ROWS = [
    {"text": "a <mask>", "answers": ["x"], "predictions": [{"token": "x", "prob": 0.5}], "rank": 1, "unreachable": []},
    {"text": "b <mask>", "answers": ["y"], "predictions": [{"token": "z", "prob": 0.4},
                                                         {"token": "y", "prob": 0.1}], "rank": 2, "unreachable": []},
    {"text": "c <mask>", "answers": ["w", "qq"], "predictions": [{"token": "z", "prob": 0.3}], "rank": None,
     "unreachable": ["qq"]},
    {"text": "d | <mask>", "answers": [], "predictions": [{"token": "|", "prob": 0.9}], "rank": None,
     "unreachable": []},
]


def test_summarize_counts():
    s = F.summarize(ROWS, 5)
    assert s == {"prompts": 4, "prompts_with_answers": 3, "top_k": 5, "cloze_top1": round(1 / 3, 4),
                 "cloze_topk": round(2 / 3, 4), "cloze_top1_hits": 1, "cloze_topk_hits": 2}
    empty = F.summarize([ROWS[3]], 5)
    assert empty["prompts_with_answers"] == 0 and empty["cloze_top1"] is None and empty["cloze_topk"] is None


def test_markdown_has_a_row_per_prompt():
    md = F.markdown(ROWS, F.summarize(ROWS, 5))
    lines = md.splitlines()
    assert lines[0] == "# Fill-mask report"
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| | prompt"))
    assert "top-5 predictions" in lines[header] and lines[header + 1] == "|---|---|---|---|"
    body = lines[header + 2:header + 2 + len(ROWS)]
    assert all(ln.startswith("| ") and ln.endswith(" |") for ln in body)
    assert lines[header + 2 + len(ROWS)] == ""
    assert body[0].startswith("| ✅ |") and body[1].startswith("| ☑️ 2 |") and body[2].startswith("| ❌ |")
    assert body[3].startswith("|  |")
    assert "(not a single token: qq)" in body[2]
    assert "d \\| `<mask>`" in body[3] and "`\\|` 0.90" in body[3]  # pipes escaped, cells intact
    cells = [re.split(r"(?<!\\)\|", ln) for ln in body]
    assert all(len(c) == 6 and c[0] == c[-1] == "" for c in cells)  # exactly four cells per row
    assert "top-1 33%" in md and "top-5 67%" in md


def test_markdown_from_real_rows(roberta_dir):
    rows = F.run_prompts(str(roberta_dir), PROMPTS, 3)
    md = F.markdown(rows, F.summarize(rows, 3))
    assert sum(1 for ln in md.splitlines() if ln.startswith("| ") and "<mask>" in ln) == len(PROMPTS)
