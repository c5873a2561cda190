"""training.py: a real (tiny) RoBERTa trained with the accelerate loop on CPU in fp32: the loss falls,
the sparse head matches the full head, and a resumed run ends bit-identical to an uninterrupted one."""
from __future__ import annotations

import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mlmpipe import batches as B
from mlmpipe import grouping as G
from mlmpipe import model as M
from mlmpipe import compute as C
from mlmpipe import training as TR
from mlmpipe.masking import IGNORE, Masker, generator, pad_batch
from mlmpipe import checkpoints as CK
from mlmpipe.checkpoints import CheckpointError, Checkpoints
from mlmpipe.training import TrainingError

from conftest import FAMILIES, FAMILY_KIND, tiny_model_params, tiny_pretrain_params

BLOCK = 32


@pytest.fixture(scope="module")
def data(bpe_tok, docs, val_docs):
    train = G.group_batch({"text": docs}, bpe_tok, BLOCK)["input_ids"]
    val = G.group_batch({"text": val_docs}, bpe_tok, BLOCK)["input_ids"]
    assert train.shape[0] >= 200 and val.shape[0] >= 8
    return train, val


@pytest.fixture(scope="module")
def init_dir(bpe_tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("model_init")
    M.build_scratch(tiny_model_params("roberta"), bpe_tok, BLOCK, seed=0).save_pretrained(d, safe_serialization=True)
    return d


def fresh_model(bpe_tok):
    return M.build_scratch(tiny_model_params("roberta"), bpe_tok, BLOCK, seed=0)


def run(bpe_tok, data, p, ckpt_dir, fp="fp", masker=None, train_data=None):
    train, val = data
    masker = masker or Masker.from_tokenizer(bpe_tok)
    return TR.train(fresh_model(bpe_tok), train if train_data is None else train_data, val, masker, p, 42,
                    bpe_tok.pad_token_id, str(ckpt_dir), fp, show_progress=False)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loss_falls_over_20_steps(bpe_tok, data, tmp_path):
    p = tiny_pretrain_params(max_steps=20, log_every=1, eval_every=10, lr=0.01, warmup_steps=2)
    model, hist, summary = run(bpe_tok, data, p, tmp_path / "ck")
    losses = [r["loss"] for r in hist.train]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.5, losses
    assert losses[0] == pytest.approx(np.log(len(bpe_tok)), abs=0.5)  # starts near uniform
    assert [r["step"] for r in hist.val] == [10, 20]
    # held-out loss: well below uniform by step 10 and still falling (measured 4.63 -> 4.30; uniform 6.37)
    assert hist.val[0]["val_loss"] < np.log(len(bpe_tok)) - 1.0, hist.val
    assert hist.val[-1]["val_loss"] < hist.val[0]["val_loss"] - 0.1, hist.val
    assert summary["steps"] == 20 and summary["resumed_from_step"] == 0
    assert summary["mixed_precision"] == "no" and summary["device"] == "cpu"
    assert summary["train_tokens_seen"] == 20 * 8 * BLOCK
    assert summary["final_train_loss"] == losses[-1]
    assert hist.train[-1]["lr"] == pytest.approx(0.0)  # linear decay to zero at the last step
    # no checkpoint is written at the final step
    assert Checkpoints(str(tmp_path / "ck"), "fp", 2).complete() == []


def test_attention_kernel_auto_is_matmul_on_cpu_and_restores_the_config(bpe_tok):
    model = fresh_model(bpe_tok)
    flags = torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.math_sdp_enabled
    before, impl = [f() for f in flags], model.config._attn_implementation
    with C.attention_kernel("auto", "cpu", model):
        assert model.config._attn_implementation == C.MATMUL and [f() for f in flags] == before
    assert model.config._attn_implementation == impl
    with C.attention_kernel("math", "cpu", model):
        assert [f() for f in flags] == [False, True] and model.config._attn_implementation == impl
    with C.attention_kernel("flash", "cpu"):
        assert [f() for f in flags] == [True, False]
    assert [f() for f in flags] == before
    with C.attention_kernel("auto", "cuda", model), C.attention_kernel("default", "cpu", model):
        assert [f() for f in flags] == before and model.config._attn_implementation == impl


@pytest.mark.parametrize("family", FAMILIES)
def test_matmul_attention_matches_sdpa_math_with_and_without_padding(toks, family):
    tok = toks[FAMILY_KIND[family]]
    model = M.build_scratch(tiny_model_params(family), tok, BLOCK, seed=0).eval()
    ids = torch.randint(5, len(tok), (4, BLOCK))
    attn = torch.ones_like(ids)
    attn[1, 20:] = 0  # a padded example: its padding must not be attended to
    outs = {}
    for kernel in ("math", "matmul"):
        with C.attention_kernel(kernel, "cpu", model), torch.no_grad():
            outs[kernel] = [model(input_ids=ids).logits, model(input_ids=ids, attention_mask=attn).logits]
    for a, b in zip(outs["math"], outs["matmul"]):
        torch.testing.assert_close(b[:, :20], a[:, :20], rtol=1e-4, atol=1e-5)
    # padding is masked: the unpadded positions of example 1 differ from the unmasked run
    assert not torch.allclose(outs["matmul"][0][1, :20], outs["matmul"][1][1, :20])
    for kernel, sdpa_ops in (("math", True), ("matmul", False)):  # the kernel really runs, no silent fallback
        with C.attention_kernel(kernel, "cpu", model), torch.no_grad(), torch.profiler.profile() as prof:
            model(input_ids=ids, attention_mask=attn)
        assert any("scaled_dot_product" in e.name for e in prof.events()) == sdpa_ops


def test_attention_kernels_train_the_same(bpe_tok, data, tmp_path):
    curves = {}
    for kernel in ("matmul", "math", "flash"):
        p = tiny_pretrain_params(max_steps=6, log_every=1, attention_kernel=kernel)
        _, hist, _ = run(bpe_tok, data, p, tmp_path / kernel)
        curves[kernel] = [r["loss"] for r in hist.train]
    assert curves["matmul"] == pytest.approx(curves["math"], rel=1e-3)
    assert curves["flash"] == pytest.approx(curves["math"], rel=1e-3)


def test_sparse_and_full_head_same_loss(bpe_tok, data, tmp_path):
    train, _ = data
    model = fresh_model(bpe_tok)
    masker = Masker.from_tokenizer(bpe_tok)
    ids = torch.from_numpy(train[:8].astype(np.int64))
    x, y = masker(ids, 0.15, generator(1, 2))
    sparse = C.SparseMLM(model, sparse=True)(x, None, y)
    full = C.SparseMLM(model, sparse=False)(x, None, y)
    torch.testing.assert_close(sparse, full, rtol=1e-5, atol=1e-4)
    ref = torch.nn.functional.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten(),
                                            ignore_index=IGNORE, reduction="sum")
    torch.testing.assert_close(sparse, ref, rtol=1e-5, atol=1e-4)
    # and in training: the curves agree
    p = tiny_pretrain_params(max_steps=4, log_every=1)
    _, h1, _ = run(bpe_tok, data, replace(p, sparse_head=True), tmp_path / "a")
    _, h2, _ = run(bpe_tok, data, replace(p, sparse_head=False), tmp_path / "b")
    np.testing.assert_allclose([r["loss"] for r in h1.train], [r["loss"] for r in h2.train], rtol=1e-4)


def test_grad_accum_matches_one_big_batch(bpe_tok, data, tmp_path):
    p = tiny_pretrain_params(max_steps=4, log_every=1)
    m1, h1, _ = run(bpe_tok, data, p, tmp_path / "a")
    m2, h2, _ = run(bpe_tok, data, replace(p, grad_accum=2), tmp_path / "b")
    np.testing.assert_allclose([r["loss"] for r in h1.train], [r["loss"] for r in h2.train], rtol=1e-4)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


class SignalAt:
    """The real masker, plus a SIGINT sent to this process while training step ``at`` (1-based) is
    running, like Ctrl-C. Single-row calls are the validation masks drawn before training starts."""

    def __init__(self, tok, at: int):
        self.masker, self.steps, self.at = Masker.from_tokenizer(tok), 0, at

    def interrupt(self):
        os.kill(os.getpid(), signal.SIGINT)

    def __call__(self, ids, prob, g, ensure_one=True):
        if ids.shape[0] > 1:
            self.steps += 1
            if self.steps == self.at:
                self.interrupt()
        return self.masker(ids, prob, g, ensure_one)


class CrashAt(SignalAt):
    """The real masker, plus a hard crash (no clean stop) during training step ``at``."""

    def interrupt(self):
        raise RuntimeError("simulated crash")


def test_resume_after_signal_is_bit_identical(bpe_tok, data, tmp_path):
    p = tiny_pretrain_params(max_steps=10, log_every=1, checkpoint_every=1000)
    reference, ref_hist, _ = run(bpe_tok, data, p, tmp_path / "ref")
    ck = tmp_path / "ck"
    # Whatever handlers the test runs under (SIGINT is ignored in a job started in the background).
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(TR.Interrupted):
        run(bpe_tok, data, p, ck, masker=SignalAt(bpe_tok, at=4))
    assert {s: signal.getsignal(s) for s in before} == before  # the loop restored them
    found = Checkpoints(str(ck), "fp", 2).latest()
    assert found is not None and found[0] == 4
    resumed, hist, summary = run(bpe_tok, data, p, ck)
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 10
    assert same_weights(resumed, reference)
    assert hist.train == ref_hist.train and hist.val == ref_hist.val  # the curves cover the whole run


def test_signal_stops_with_one_line_interrupted(bpe_tok, data, tmp_path):
    p = tiny_pretrain_params(max_steps=10, checkpoint_every=1000)
    with pytest.raises(TR.Interrupted) as e:
        run(bpe_tok, data, p, tmp_path / "ck", masker=SignalAt(bpe_tok, at=3))
    msg = str(e.value)
    assert "\n" not in msg and "signal 2" in msg and "step 3/10" in msg and str(tmp_path / "ck") in msg
    assert Checkpoints(str(tmp_path / "ck"), "fp", 2).latest()[0] == 3


def test_resume_after_crash_from_periodic_checkpoint_is_bit_identical(bpe_tok, data, tmp_path):
    p = tiny_pretrain_params(max_steps=9, checkpoint_every=3, keep_checkpoints=1, warmup_steps=4,
                             schedule="cosine")
    reference, _, _ = run(bpe_tok, data, p, tmp_path / "ref")
    ck = tmp_path / "ck"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(bpe_tok, data, p, ck, masker=CrashAt(bpe_tok, at=8))  # during step index 7
    complete = Checkpoints(str(ck), "fp", 1).complete()
    assert [d.name for d in complete] == ["step-0000006"]  # keep_checkpoints: 1 pruned step 3
    resumed, _, summary = run(bpe_tok, data, p, ck)
    assert summary["resumed_from_step"] == 6
    assert same_weights(resumed, reference)


def test_checkpoint_with_other_fingerprint_is_ignored(bpe_tok, data, tmp_path):
    p = tiny_pretrain_params(max_steps=6, checkpoint_every=3)
    ck = tmp_path / "ck"
    run(bpe_tok, data, p, ck, fp="first")
    assert Checkpoints(str(ck), "first", 2).latest()[0] == 3
    assert Checkpoints(str(ck), "second", 2).latest() is None
    _, _, summary = run(bpe_tok, data, p, ck, fp="second")
    assert summary["resumed_from_step"] == 0
    # the new run's own checkpoint replaced the stale one
    assert Checkpoints(str(ck), "second", 2).latest()[0] == 3
    assert Checkpoints(str(ck), "first", 2).latest() is None


def test_fingerprint_tracks_math_params_init_and_data(bpe_tok, data, init_dir, tmp_path, pretrain_section):
    train, _ = data
    p = pretrain_section
    fp = CK.fingerprint(p, str(init_dir), train)
    assert fp == CK.fingerprint(p, str(init_dir), train.copy())
    assert fp == CK.fingerprint(replace(p, log_every=7, checkpoint_every=3, num_threads=2), str(init_dir), train)
    assert fp != CK.fingerprint(replace(p, lr=0.001), str(init_dir), train)
    assert fp != CK.fingerprint(p, str(init_dir), train[:-1])
    other = tmp_path / "init2"
    M.build_scratch(tiny_model_params("roberta"), bpe_tok, BLOCK, seed=1).save_pretrained(other)
    assert fp != CK.fingerprint(p, str(other), train)
    rows = [np.asarray(r) for r in train[:5]]
    assert CK.fingerprint(p, str(init_dir), rows) == CK.fingerprint(p, str(init_dir), [r.copy() for r in rows])


@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.pt"])
def test_truncated_checkpoint_gives_checkpoint_error(bpe_tok, data, tmp_path, victim):
    p = tiny_pretrain_params(max_steps=4, checkpoint_every=2)
    ck = tmp_path / "ck"
    run(bpe_tok, data, p, ck)
    step, d = Checkpoints(str(ck), "fp", 2).latest()
    f = d / victim
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError) as e:
        run(bpe_tok, data, p, ck)
    msg = str(e.value)
    assert "\n" not in msg and str(d) in msg and "corrupt or truncated" in msg


def test_unreadable_state_json_is_skipped(bpe_tok, data, tmp_path):
    model = fresh_model(bpe_tok)
    opt = C.make_optimizer(model, tiny_pretrain_params(), "cpu")
    ck = Checkpoints(str(tmp_path), "fp", 3)
    ck.save(2, model, opt)
    ck.save(4, model, opt)
    (tmp_path / "step-0000004" / "state.json").write_text("{not json")
    assert ck.latest() == (2, tmp_path / "step-0000002")
    (tmp_path / ".step-0000006.tmp-123").mkdir()  # a half-written one is never considered
    assert [d.name for d in ck.complete()] == ["step-0000002", "step-0000004"]


def test_schedule_shapes():
    total = 100
    lin = TR.schedule(tiny_pretrain_params(schedule="linear", warmup_steps=10), total)
    cos = TR.schedule(tiny_pretrain_params(schedule="cosine", warmup_steps=10), total)
    const = TR.schedule(tiny_pretrain_params(schedule="constant", warmup_steps=10), total)
    for f in (lin, cos, const):
        assert [round(f(s), 6) for s in range(10)] == [round((s + 1) / 10, 6) for s in range(10)]  # warmup
        assert f(10) == pytest.approx(1.0)
    assert lin(55) == pytest.approx(0.5) and lin(100) == pytest.approx(0.0) and lin(32.5) == pytest.approx(0.75)
    assert cos(55) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    assert cos(32.5) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.25)))
    assert const(99) == 1.0
    assert all(lin(s) >= lin(s + 1) for s in range(10, 100))
    assert all(cos(s) >= cos(s + 1) for s in range(10, 100))
    no_warmup = TR.schedule(tiny_pretrain_params(schedule="linear", warmup_steps=0), 10)
    assert no_warmup(0) == 1.0 and no_warmup(5) == pytest.approx(0.5)


def test_global_batches_permutation_per_epoch():
    n, b, seed = 50, 8, 3
    per_epoch = n // b
    for epoch in range(3):
        idx = np.concatenate([B.global_batches(n, b, seed, epoch * per_epoch + s) for s in range(per_epoch)])
        assert len(idx) == per_epoch * b and len(set(idx.tolist())) == len(idx)  # no repeat inside an epoch
        assert idx.min() >= 0 and idx.max() < n
        full = np.random.default_rng([seed, epoch]).permutation(n)
        np.testing.assert_array_equal(idx, full[:per_epoch * b])
    e0 = B.global_batches(n, b, seed, 0)
    e1 = B.global_batches(n, b, seed, per_epoch)
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(e0, B.global_batches(n, b, seed, 0))
    assert not np.array_equal(e0, B.global_batches(n, b, seed + 1, 0))


def test_global_batches_grouped_by_length_cover_the_epoch_with_little_padding():
    rng = np.random.default_rng(0)
    n, b, seed = 1000, 16, 5
    lengths = B.Lengths(rng.integers(5, 129, size=n))
    per_epoch = n // b

    def padding(batches):
        return sum(int(lengths.values[i].max()) * len(i) - int(lengths.values[i].sum()) for i in batches)

    grouped = [B.global_batches(n, b, seed, s, lengths) for s in range(per_epoch)]
    plain = [B.global_batches(n, b, seed, s) for s in range(per_epoch)]
    flat = np.concatenate(grouped)
    assert len(set(flat.tolist())) == per_epoch * b  # still a permutation: no example twice in an epoch
    assert padding(grouped) < 0.1 * padding(plain)
    assert [len(x) for x in grouped] == [b] * per_epoch
    # seeded: the same order again, another one next epoch and for another seed; long batches not all first
    again = [B.global_batches(n, b, seed, s, B.Lengths(lengths.values)) for s in range(per_epoch)]
    assert all(np.array_equal(x, y) for x, y in zip(grouped, again))
    assert not np.array_equal(grouped[0], B.global_batches(n, b, seed, per_epoch, lengths))
    assert not np.array_equal(grouped[0], B.global_batches(n, b, seed + 1, 0, lengths))
    longest = [int(lengths.values[i].max()) for i in grouped]
    assert longest != sorted(longest, reverse=True)


@pytest.mark.parametrize("group_by_length", [True, False])
def test_line_by_line_data_trains(bpe_tok, docs, data, tmp_path, group_by_length):
    rows = [np.asarray(bpe_tok(d)["input_ids"][:BLOCK], dtype=np.int32) for d in docs[:64]]
    p = tiny_pretrain_params(max_steps=3, log_every=1, group_by_length=group_by_length)
    _, hist, summary = run(bpe_tok, data, p, tmp_path / "ck", train_data=rows)
    assert len(hist.train) == 3 and all(np.isfinite(r["loss"]) for r in hist.train)
    assert summary["train_tokens_seen"] < 3 * 8 * BLOCK  # padding is not counted


def test_epochs_instead_of_max_steps(bpe_tok, data, tmp_path):
    train, _ = data
    p = tiny_pretrain_params(max_steps=None, epochs=0.05)
    _, _, summary = run(bpe_tok, data, p, tmp_path / "ck")
    assert summary["steps"] == max(1, int(0.05 * (len(train) // 8)))


def test_refusals(bpe_tok, data, tmp_path):
    with pytest.raises(TrainingError, match="grad_accum"):
        run(bpe_tok, data, tiny_pretrain_params(batch_size=6, grad_accum=4), tmp_path)
    with pytest.raises(TrainingError, match="larger than the training split"):
        run(bpe_tok, data, tiny_pretrain_params(batch_size=8), tmp_path, train_data=data[0][:5])


def test_clear_checkpoints(tmp_path):
    for run in ("a" * 16, "b" * 16):
        (tmp_path / "ck" / run / "step-0000001").mkdir(parents=True)
    CK.clear_checkpoints(str(tmp_path / "ck" / ("a" * 16)))
    assert [d.name for d in (tmp_path / "ck").iterdir()] == ["b" * 16]  # another run's checkpoints stay


def test_run_dir_is_keyed_by_fingerprint_under_the_root_or_the_environment(tmp_path):
    fp, other = "ab" * 32, "cd" * 32
    assert CK.run_dir("data/checkpoints", fp, environ={}) == f"data/checkpoints/{'ab' * 8}"
    assert CK.run_dir("data/checkpoints", other, environ={}) != CK.run_dir("data/checkpoints", fp, environ={})
    cache = str(tmp_path / "cache")
    assert CK.run_dir("data/checkpoints", fp, environ={"MLMPIPE_CHECKPOINTS": cache}) == f"{cache}/{'ab' * 8}"
    home = os.path.expanduser("~")
    assert CK.run_dir("~/.cache/mlmpipe/checkpoints", fp, environ={}) == f"{home}/.cache/mlmpipe/checkpoints/{'ab' * 8}"


def test_bf16_pure_tracks_autocast_and_keeps_fp32_master(bpe_tok, data, tmp_path):
    """bf16-pure (bf16 compute copy, fp32 master weights) follows the bf16-autocast curve closely,
    and the returned/saved model keeps fp32 weights that moved from the initial ones."""
    p = tiny_pretrain_params(max_steps=8, log_every=1, lr=0.01, warmup_steps=2)
    _, h_auto, _ = run(bpe_tok, data, replace(p, mixed_precision="bf16"), tmp_path / "a")
    model, h_pure, s = run(bpe_tok, data, replace(p, mixed_precision="bf16-pure"), tmp_path / "b")
    assert s["mixed_precision"] == "bf16-pure"
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
    assert not same_weights(model, fresh_model(bpe_tok))
    # measured: at most 0.0015 apart over the 8 steps (bf16 autocast vs fp32: 0.0018); with half the learning
    # rate, bf16-pure is 0.027 apart at step 2 and 0.5 at step 8
    np.testing.assert_allclose([r["loss"] for r in h_pure.train], [r["loss"] for r in h_auto.train],
                               rtol=0, atol=0.01)
    assert h_pure.train[-1]["loss"] < h_pure.train[0]["loss"]


def test_next_sentence_objective_loss_is_bertforpretraining_loss(wp_tok, tmp_path):
    """With sentence pairs and BertForPreTraining, the loss is BERT's: MLM mean + NSP mean (compared with
    the model's own ``loss``), and both heads learn."""
    from corpora import make_docs

    docs = [np.asarray(wp_tok(d, add_special_tokens=False)["input_ids"], dtype=np.int32) for d in make_docs(90, 5)]
    pairs = G.sentence_pairs(docs, wp_tok.cls_token_id, wp_tok.sep_token_id, 40, seed=1)
    ids, types, labels = pairs["input_ids"], pairs["token_type_ids"], np.asarray(pairs["next_sentence_label"])
    m = replace(tiny_model_params("bert"), next_sentence=True)
    model = M.build_scratch(m, wp_tok, 40, seed=0)
    assert type(model).__name__ == "BertForPreTraining" and M.has_nsp_head(model)

    masker = Masker.from_tokenizer(wp_tok)
    x, attn = pad_batch(ids[:6], wp_tok.pad_token_id)
    t, _ = pad_batch(types[:6], 0)
    xm, y = masker(x, 0.15, generator(3))
    y[attn == 0] = IGNORE
    nsp_y = torch.from_numpy(labels[:6].astype(np.int64))
    model.eval()
    ref = model(input_ids=xm, attention_mask=attn, token_type_ids=t, labels=y, next_sentence_label=nsp_y).loss
    mlm_sum, nsp_sum = C.SparseMLM(model)(xm, attn, y, t, nsp_y)
    torch.testing.assert_close(mlm_sum / (y != IGNORE).sum() + nsp_sum / 6, ref, rtol=1e-5, atol=1e-5)

    p = tiny_pretrain_params(max_steps=12, log_every=4, eval_every=12, lr=0.005)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, hist, _ = TR.train(model, ids, ids[:16], masker, p, 42, wp_tok.pad_token_id, str(tmp_path / "ck"),
                              "fp", show_progress=False, train_pairs=(types, labels),
                              val_pairs=(types[:16], labels[:16]))
    assert all(np.isfinite(r["nsp_loss"]) and r["nsp_loss"] > 0 for r in hist.train)
    assert 0.0 <= hist.val[-1]["val_nsp_accuracy"] <= 1.0
    after = model.state_dict()
    assert not torch.equal(before["cls.seq_relationship.weight"], after["cls.seq_relationship.weight"])
    with pytest.raises(TrainingError, match="sentence pairs"):  # an NSP model on data without pairs
        TR.train(M.build_scratch(m, wp_tok, 40, seed=0), ids, ids[:4], masker, p, 42, wp_tok.pad_token_id,
                 str(tmp_path / "ck2"), "fp", show_progress=False)


def test_random_offsets_cut_the_stream_at_new_places(bpe_tok, data, tmp_path):
    train, _ = data
    idx = np.array([0, 3, 7])
    a = B.crop_blocks(train, idx, seed=1, step=0)
    assert a.shape == (3, BLOCK)
    flat = train.reshape(-1)
    for row, i in zip(a, idx):  # a window of the token stream starting inside block i
        starts = [s for s in range(i * BLOCK, (i + 1) * BLOCK) if np.array_equal(flat[s:s + BLOCK], row)]
        assert starts
    assert np.array_equal(a, B.crop_blocks(train, idx, seed=1, step=0))  # seeded
    assert not np.array_equal(a, B.crop_blocks(train, idx, seed=1, step=1))
    p = tiny_pretrain_params(max_steps=6, log_every=2, random_offsets=True)
    m1, h1, _ = run(bpe_tok, data, p, tmp_path / "a")
    m2, h2, _ = run(bpe_tok, data, p, tmp_path / "b")
    assert h1.train == h2.train and same_weights(m1, m2)
    _, h3, _ = run(bpe_tok, data, replace(p, random_offsets=False), tmp_path / "c")
    assert h3.train != h1.train


def test_batch_of_a_step_depends_only_on_seed_and_step(bpe_tok, docs, data):
    """``Batches.at`` (the one definition of a step's batch, used by the loop and bench/paths.py): the same
    batch for the same (seed, step) whatever was drawn before, labels are the ids at the masked positions,
    and only real tokens count (blocks: all; padded examples: fewer than the padded batch)."""
    train, _ = data
    masker, pad = Masker.from_tokenizer(bpe_tok), bpe_tok.pad_token_id
    p = tiny_pretrain_params(random_offsets=True)
    fresh, used = B.Batches(train, masker, p, 42, pad), B.Batches(train, masker, p, 42, pad)
    for step in range(5):
        used.at(step)
    a, b = fresh.at(5), used.at(5)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert a.attention is None and a.tokens == a.inputs.numel() == 8 * BLOCK
    assert a.masked == int((a.labels != IGNORE).sum()) > 0
    rows = torch.from_numpy(B.crop_blocks(train, fresh.indices(5), 42, 5).astype(np.int64))
    chosen = a.labels != IGNORE
    assert torch.equal(a.labels[chosen], rows[chosen]) and torch.equal(a.inputs[~chosen], rows[~chosen])
    assert not torch.equal(fresh.at(6).inputs, a.inputs)
    examples = [np.asarray(bpe_tok(d)["input_ids"][:BLOCK], dtype=np.int32) for d in docs[:64]]
    lines = B.Batches(examples, masker, p, 42, pad)
    c = lines.at(0)
    assert c.tokens == int(c.attention.sum()) == sum(len(examples[i]) for i in lines.indices(0))
    assert c.tokens < c.inputs.numel()


def test_keep_best_saves_the_weights_of_the_lowest_validation_loss(bpe_tok, data, tmp_path):
    """keep_best: the returned model is the one at the validation with the lowest loss, exactly (compared with
    the checkpoint an ordinary run wrote at that step), and the summary says which step it is."""
    p = tiny_pretrain_params(max_steps=12, lr=0.05, schedule="constant", eval_every=2, checkpoint_every=2,
                             keep_checkpoints=100)
    last, hist, summary = run(bpe_tok, data, p, tmp_path / "plain")
    best = min(hist.val, key=lambda r: r["val_loss"])
    assert summary["best_val_step"] == best["step"] < 12, hist.val  # the loss bumps up at the end: best is not last
    assert summary["saved_step"] == 12
    kept, kept_hist, kept_summary = run(bpe_tok, data, replace(p, keep_best=True), tmp_path / "best")
    assert kept_hist.val == hist.val and kept_summary["saved_step"] == best["step"]
    at_best = fresh_model(bpe_tok)
    at_best.load_state_dict(load_file(tmp_path / "plain" / f"step-{best['step']:07d}" / "model.safetensors"),
                            strict=False)  # (tied weights are stored once)
    assert same_weights(kept, at_best) and not same_weights(kept, last)


def test_keep_best_resumes_with_the_best_weights_kept(bpe_tok, data, tmp_path):
    p = tiny_pretrain_params(max_steps=12, lr=0.05, schedule="constant", eval_every=2, checkpoint_every=1000,
                             keep_best=True)
    reference, _, ref_summary = run(bpe_tok, data, p, tmp_path / "ref")
    ck = tmp_path / "ck"
    with pytest.raises(TR.Interrupted):
        run(bpe_tok, data, p, ck, masker=SignalAt(bpe_tok, at=11))
    assert (Checkpoints(str(ck), "fp", 2).latest()[1] / CK.BEST).is_file()
    resumed, _, summary = run(bpe_tok, data, p, ck)
    assert summary["resumed_from_step"] == 11 and summary["saved_step"] == ref_summary["saved_step"] < 11
    assert same_weights(resumed, reference)


def _crash_with_checkpoint(bpe_tok, data, p, ck):
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(bpe_tok, data, p, ck, masker=CrashAt(bpe_tok, at=5))
    (step, d), = [Checkpoints(str(ck), "fp", 2).latest()]
    assert step == 3
    return d


def test_checkpoint_from_other_training_code_is_ignored_unless_asked(bpe_tok, data, tmp_path, caplog):
    """After a crash and a fix to the training code, the old checkpoint is not resumed over (a log line says
    why and how to resume anyway); pretrain.resume_other_code: true resumes it."""
    import json

    p = tiny_pretrain_params(max_steps=6, checkpoint_every=3)
    d = _crash_with_checkpoint(bpe_tok, data, p, tmp_path / "ck")
    state = json.loads((d / "state.json").read_text())
    assert state["code"] == CK.code_fingerprint()
    (d / "state.json").write_text(json.dumps({**state, "code": "0" * 64}))  # as the code before the fix wrote it
    _, _, summary = run(bpe_tok, data, p, tmp_path / "ck")
    assert summary["resumed_from_step"] == 0
    assert "written by other training code" in caplog.text and "pretrain.resume_other_code: true" in caplog.text

    d = _crash_with_checkpoint(bpe_tok, data, p, tmp_path / "ck2")
    (d / "state.json").write_text(json.dumps({**json.loads((d / "state.json").read_text()), "code": "0" * 64}))
    _, _, summary = run(bpe_tok, data, replace(p, resume_other_code=True), tmp_path / "ck2")
    assert summary["resumed_from_step"] == 3


def test_code_fingerprint_follows_the_training_code_only(tmp_path):
    import shutil

    package = tmp_path / "mlmpipe"
    shutil.copytree(os.path.dirname(CK.__file__), package)
    assert CK.code_fingerprint(package=package) == CK.code_fingerprint()
    (package / "evaluation.py").write_text("# an evaluate-only change\n", encoding="utf-8")
    assert CK.code_fingerprint(package=package) == CK.code_fingerprint()
    with open(package / "masking.py", "a", encoding="utf-8") as fh:
        fh.write("\n# a fix\n")
    assert CK.code_fingerprint(package=package) != CK.code_fingerprint()


def test_a_checkpoint_missing_a_weight_is_refused(bpe_tok, data, tmp_path):
    from safetensors.torch import save_file

    p = tiny_pretrain_params(max_steps=6, checkpoint_every=3)
    d = _crash_with_checkpoint(bpe_tok, data, p, tmp_path / "ck")
    state = load_file(d / "model.safetensors")
    save_file({k: v for k, v in state.items() if "layer.0." not in k}, d / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"does not fit the model: \d+ weights missing \(roberta.encoder.layer.0"):
        run(bpe_tok, data, p, tmp_path / "ck")


def test_fp16_gradient_scaler_state_round_trips_through_a_checkpoint(bpe_tok, tmp_path):
    """This CPU has no fp16 gradient scaling in accelerate (its scaler is None here), so the round trip is
    checked directly: the scale and growth tracker an fp16 run reached come back from the checkpoint."""
    model = fresh_model(bpe_tok)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=3)
    for _ in range(4):  # grow the scale once, and count toward the next growth
        scaler.scale(model.roberta.embeddings.word_embeddings.weight.sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    ck = Checkpoints(str(tmp_path), "fp", 2)
    d = ck.save(4, model, optimizer, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=3)
    Checkpoints.load_scaler(d, fresh)
    assert fresh.state_dict() == scaler.state_dict() and fresh.get_scale() == 2.0 ** 17
    with pytest.raises(CheckpointError, match="no scaler.pt"):
        Checkpoints.load_scaler(ck.save(5, model, optimizer), fresh)
