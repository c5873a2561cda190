"""params.py: every section is validated up front, and every refusal is one line naming the key,
the bad value and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest

from mlmpipe import params as P
from mlmpipe.params import ParamError

ROOT = Path(__file__).resolve().parents[1]


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_repo_params_yaml_is_valid():
    data = P.load_yaml((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert isinstance(P.section(data, "seed"), int)
    for name in P.SECTIONS:
        P.section(data, name)  # must not raise


def test_defaults_when_section_missing():
    p = P.parse(P.Pretrain, "pretrain", None)
    assert p == P.Pretrain()
    assert P.section({}, "seed") == 42


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ParamError) as e:
        P.parse(P.Pretrain, "pretrain", {"learning_rate": 0.1})
    msg = one_line(e)
    assert "pretrain.learning_rate" in msg
    assert "unknown key" in msg
    assert "lr" in msg and "warmup_steps" in msg  # what is allowed


def test_from_alias_is_accepted_and_listed():
    p = P.parse(P.TrainTokenizer, "train_tokenizer", {"from": "some/dir"})
    assert p.from_dir == "some/dir"
    with pytest.raises(ParamError) as e:
        P.parse(P.TrainTokenizer, "train_tokenizer", {"vocab": 10})
    allowed = one_line(e).split("allowed keys are ", 1)[1].split(", ")
    assert "from" in allowed and "from_dir" not in allowed  # the YAML spelling is listed


@pytest.mark.parametrize("section,key,value,allowed", [
    (P.Pretrain, "lr", "fast", "a number"),
    (P.Pretrain, "max_steps", 1.5, "an integer"),
    (P.Pretrain, "max_steps", True, "an integer"),  # bool is not an int here
    (P.Pretrain, "whole_word", "yes", "true or false"),
    (P.Pretrain, "schedule", "exponential", "'linear'"),
    (P.TrainTokenizer, "kind", "unigram", "'bpe'"),
    (P.Model, "family", "gpt2", "'roberta'"),
    (P.FetchCorpus, "source", 3, "a string"),
    (P.FetchCorpus, "max_documents", "all", "or null"),
])
def test_wrong_type_names_key_value_and_allowed(section, key, value, allowed):
    name = {v: k for k, v in P.SECTIONS.items()}[section]
    with pytest.raises(ParamError) as e:
        P.parse(section, name, {key: value})
    msg = one_line(e)
    assert f"{name}.{key}" in msg
    assert repr(value) in msg
    assert allowed in msg


@pytest.mark.parametrize("section,key,value,rule", [
    (P.Pretrain, "lr", 0, "> 0"),
    (P.Pretrain, "lr", 1.5, "< 1.0"),
    (P.Pretrain, "mlm_probability", 1.0, "< 1"),
    (P.TrainTokenizer, "vocab_size", 10, ">= 64"),
    (P.TokenizeGroup, "block_size", 4, ">= 8"),
    (P.TokenizeGroup, "num_proc", 0, ">= 1"),
    (P.FetchCorpus, "validation_fraction", 1.0, "< 1.0"),
    (P.FetchCorpus, "max_documents", 0, "> 0"),
    (P.Evaluate, "passes", 101, "<= 100"),
])
def test_out_of_range_names_key_value_and_range(section, key, value, rule):
    name = {v: k for k, v in P.SECTIONS.items()}[section]
    with pytest.raises(ParamError) as e:
        P.parse(section, name, {key: value})
    msg = one_line(e)
    assert f"{name}.{key} = {value!r}" in msg
    assert rule in msg


def test_int_accepted_for_float_field():
    p = P.parse(P.Pretrain, "pretrain", {"clip_norm": 2})
    assert p.clip_norm == 2.0 and isinstance(p.clip_norm, float)


def test_section_must_be_mapping():
    with pytest.raises(ParamError) as e:
        P.parse(P.Pretrain, "pretrain", [1, 2])
    assert "pretrain" in one_line(e) and "mapping" in one_line(e)


def test_hidden_not_divisible_by_heads():
    with pytest.raises(ParamError) as e:
        P.parse(P.Model, "model", {"hidden": 100, "heads": 3})
    msg = one_line(e)
    assert "model.hidden = 100" in msg and "model.heads = 3" in msg
    assert "[1, 2, 4, 5, 10, 20, 25]" in msg  # the heads that would work


def test_pretrained_needs_checkpoint():
    with pytest.raises(ParamError) as e:
        P.parse(P.BuildModel, "build_model", {"init": "pretrained"})
    msg = one_line(e)
    assert "build_model.checkpoint" in msg and "pretrained" in msg


def test_scratch_with_checkpoint_is_refused():
    with pytest.raises(ParamError) as e:
        P.parse(P.BuildModel, "build_model", {"init": "scratch", "checkpoint": "roberta-base"})
    msg = one_line(e)
    assert "build_model.checkpoint = 'roberta-base'" in msg and "init: scratch" in msg


def test_pretrained_with_checkpoint_ok():
    p = P.parse(P.BuildModel, "build_model", {"init": "pretrained", "checkpoint": "some/dir"})
    assert p.checkpoint == "some/dir"


def test_max_steps_and_epochs_both_null():
    with pytest.raises(ParamError) as e:
        P.parse(P.Pretrain, "pretrain", {"max_steps": None})
    assert "pretrain.max_steps" in one_line(e) and "epochs" in one_line(e)
    assert P.parse(P.Pretrain, "pretrain", {"max_steps": None, "epochs": 1.5}).epochs == 1.5


def test_sha256_must_be_hex():
    with pytest.raises(ParamError) as e:
        P.parse(P.FetchCorpus, "fetch_corpus", {"sha256": "abc"})
    assert "fetch_corpus.sha256 = 'abc'" in one_line(e)
    P.parse(P.FetchCorpus, "fetch_corpus", {"sha256": "A" * 64})


def test_invalid_yaml_is_one_line_with_line_number():
    text = "seed: 1\npretrain:\n  lr: 0.1\n   max_steps: 3\n"
    with pytest.raises(ParamError) as e:
        P.load_yaml(text, "params.yaml")
    msg = one_line(e)
    assert msg.startswith("params.yaml is not valid YAML")
    assert "line 4" in msg


def test_yaml_top_level_must_be_mapping():
    with pytest.raises(ParamError) as e:
        P.load_yaml("- a\n- b\n")
    assert "mapping" in one_line(e)
    assert P.load_yaml("") == {}


def test_seed_validation():
    assert P.parse_seed(0) == 0
    for bad in (-1, True, "1", 1.0):
        with pytest.raises(ParamError) as e:
            P.parse_seed(bad)
        assert "seed" in one_line(e)


def test_prompts_parsed_from_strings_and_mappings():
    p = P.parse(P.FillMaskReport, "fill_mask_report", {"prompts": [
        "A <mask> here.", {"text": "The <mask> statement.", "answers": ["break", "continue"]},
        {"text": "x <mask>", "answers": "y"}]})
    assert p.prompts == (P.Prompt("A <mask> here.", ()), P.Prompt("The <mask> statement.", ("break", "continue")),
                         P.Prompt("x <mask>", ("y",)))


@pytest.mark.parametrize("text", ["No mask at all.", "Two <mask> and <mask>.", "[MASK] is not ours."])
def test_prompt_needs_exactly_one_mask(text):
    with pytest.raises(ParamError) as e:
        P.parse(P.FillMaskReport, "fill_mask_report", {"prompts": [{"text": text}]})
    msg = one_line(e)
    assert "fill_mask_report.prompts[0].text" in msg and "exactly one <mask>" in msg


@pytest.mark.parametrize("item,where", [
    ({"text": "a <mask>", "answer": "b"}, "fill_mask_report.prompts[0].answer"),
    ({"text": "a <mask>", "answers": [1]}, "fill_mask_report.prompts[0].answers"),
    (42, "fill_mask_report.prompts[0]"),
])
def test_bad_prompt_items(item, where):
    with pytest.raises(ParamError) as e:
        P.parse(P.FillMaskReport, "fill_mask_report", {"prompts": [item]})
    assert where in one_line(e)


def test_sections_are_frozen():
    p = P.parse(P.Model, "model", {})
    with pytest.raises(Exception):
        p.hidden = 3  # type: ignore[misc]


@pytest.mark.parametrize("text, value", [("5e-05", 5e-05), ("2e-5", 2e-05), ("1e-3", 0.001), ("0.002", 0.002),
                                         ("1.0e-4", 1e-4)])
def test_scientific_notation_is_a_number_as_dvc_reads_it(text, value):
    """DVC writes `-S pretrain.lr=0.00005` as `lr: 5e-05` and shows it as a float; so do we (YAML 1.2)."""
    from dvc.utils.serialize import parse_yaml

    raw = f"pretrain:\n  lr: {text}\n"
    assert parse_yaml(raw, "params.yaml")["pretrain"]["lr"] == value  # what `dvc params diff` shows
    assert P.section(P.load_yaml(raw), "pretrain").lr == value


def test_yaml_1_1_booleans_are_strings_as_dvc_reads_them():
    """`yes`/`on` are booleans in YAML 1.1 (PyYAML) but strings in YAML 1.2 (ruamel.yaml, DVC): refused clearly."""
    with pytest.raises(ParamError) as e:
        P.section(P.load_yaml("pretrain:\n  whole_word: yes\n"), "pretrain")
    assert str(e.value) == "pretrain.whole_word = 'yes': must be true or false"


def test_duplicate_key_is_refused_in_one_line():
    with pytest.raises(ParamError) as e:
        P.load_yaml("pretrain:\n  lr: 0.1\n  lr: 0.2\n")
    assert "params.yaml is not valid YAML (line 3" in str(e.value) and "\n" not in str(e.value)


def test_misspelled_section_is_refused_by_every_reader(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text((ROOT / "params.yaml").read_text(encoding="utf-8") + "\npretrian:\n  lr: 0.001\n", encoding="utf-8")
    with pytest.raises(ParamError) as e:
        P.read_params(str(f))
    assert str(e.value).startswith(f"{f}: unknown section 'pretrian'; allowed: build_model, evaluate")


def test_params_yaml_lists_every_key_a_user_can_set():
    """`dvc exp run -S section.key=value` can only set keys that params.yaml has (DVC refuses others: "Key ...
    is not in struct"), and `dvc params diff` / `dvc exp show` show only those: every field is written there."""
    import dataclasses

    data = P.load_yaml((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for name, cls in P.SECTIONS.items():
        keys = {"from" if f.name == "from_dir" else f.name for f in dataclasses.fields(cls)}
        assert set(data[name]) == keys, (name, sorted(keys - set(data[name])), sorted(set(data[name]) - keys))


def test_params_yaml_and_the_dataclasses_give_the_same_defaults():
    """One default per key: a key left out of a params file means what params.yaml writes for it, so the
    dataclass defaults (used for a key a user deletes, and by library callers) cannot drift from params.yaml.
    The one exception is data, not a default: params.yaml's cloze prompts are the default corpus's own
    questions, and a params file without ``prompts`` asks none."""
    import dataclasses

    data = P.read_params(str(ROOT / "params.yaml"))
    assert P.section(data, "seed") == P.section({}, "seed")
    for name, cls in P.SECTIONS.items():
        written, default = P.section(data, name), cls()
        for f in dataclasses.fields(cls):
            if (name, f.name) == ("fill_mask_report", "prompts"):
                assert len(written.prompts) > 0 and default.prompts == ()
                continue
            assert getattr(written, f.name) == getattr(default, f.name), \
                f"{name}.{f.name}: params.yaml says {getattr(written, f.name)!r}, {cls.__name__} says " \
                f"{getattr(default, f.name)!r}"


def _sections(**raw) -> dict:
    data = P.read_params(str(ROOT / "params.yaml"))
    for dotted, value in raw.items():
        name, key = dotted.split("__")
        data[name] = {**data[name], key: value}
    return {name: P.section(data, name) for name in ["seed", *P.SECTIONS]}


def test_positions_rule_lives_in_params_and_runs_before_any_stage():
    """model.max_position_embeddings against tokenize_group.block_size (plus RoBERTa's offset of 2) is checked
    by check_params, in one line naming both keys; a checkpoint brings its own positions, checked at load."""
    P.check_across(_sections())
    small = dict(model__family="roberta", train_tokenizer__kind="bpe", model__max_position_embeddings=129)
    with pytest.raises(ParamError) as e:
        P.check_across(_sections(**small))
    assert one_line(e) == ("model.max_position_embeddings = 129 is too small for tokenize_group.block_size = 128: "
                           "roberta needs at least 130")
    P.check_across(_sections(**small, build_model__init="pretrained", build_model__checkpoint="some/dir"))
    assert P.positions(P.Model(family="roberta"), 128) == 130
    assert P.positions(P.Model(family="modernbert"), 128) == 512  # the family's minimum (rotary)


@pytest.mark.parametrize("precision,why", [("bf16-pure", "it trains a bf16 copy of the whole model"),
                                           ("fp16", "each process's gradient scaler would see only its own shard")])
def test_fsdp_refuses_the_precisions_it_cannot_shard(precision, why):
    P.check_across(_sections(pretrain__fsdp=True))  # auto resolves to bf16 autocast for sharded weights
    P.check_across(_sections(pretrain__mixed_precision=precision))  # fine without FSDP
    with pytest.raises(ParamError) as e:
        P.check_across(_sections(pretrain__fsdp=True, pretrain__mixed_precision=precision))
    assert one_line(e).startswith(f"pretrain.mixed_precision = '{precision}': not with pretrain.fsdp: true ({why}")
    assert one_line(e).endswith("use auto, bf16 or no")


def test_auto_precision_for_sharded_weights_is_never_bf16_pure():
    from mlmpipe.compute import resolve_precision

    assert resolve_precision("auto", sharded=True) in ("bf16", "no")
    assert resolve_precision("auto") in ("bf16-pure", "no")  # this CPU machine: bf16-pure where it has bf16
