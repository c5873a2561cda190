"""families.py: one consistent record per model family, read by params, model and fill_mask; params stays
importable without torch or transformers."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing

import pytest

from mlmpipe import families
from mlmpipe import params as P
from mlmpipe.params import ParamError

from conftest import ROOT


def test_params_import_without_torch_or_transformers():
    code = ("import sys, mlmpipe.params, mlmpipe.families; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
    assert out.strip() == "[]"


def test_params_allow_exactly_the_families_and_presets():
    hints = typing.get_type_hints(P.Model)
    assert typing.get_args(hints["family"]) == families.NAMES == ("roberta", "bert", "distilbert", "modernbert")
    assert typing.get_args(typing.get_args(hints["preset"])[0]) == families.PRESET_NAMES
    with pytest.raises(ParamError) as e:
        P.parse(P.Model, "model", {"family": "gpt2"})
    assert str(e.value) == ("model.family = 'gpt2': must be one of 'roberta', 'bert', 'distilbert', "
                            "'modernbert'")


@pytest.mark.parametrize("name", families.NAMES)
def test_record_is_consistent(name):
    fam = families.FAMILIES[name]
    assert fam.name == name
    kinds = typing.get_args(typing.get_type_hints(P.TrainTokenizer)["kind"])
    assert fam.kinds and set(fam.kinds) <= set(kinds)
    assert tuple(fam.presets) == families.PRESET_NAMES
    for layers, hidden, heads, inter in fam.presets.values():
        assert min(layers, hidden, heads, inter) > 0 and hidden % heads == 0
    assert fam.position_offset >= 0 and fam.min_positions >= 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        fam.name = "other"


def test_published_facts():
    f = families.FAMILIES
    assert f["roberta"].position_offset == 2  # positions start at padding_idx + 1
    assert [n for n in f if f[n].position_offset] == ["roberta"]
    assert f["modernbert"].min_positions == 512 and not f["modernbert"].learned_positions  # rotary positions
    assert f["bert"].presets["base"] == (12, 768, 12, 3072) and f["distilbert"].presets["base"] == (6, 768, 12, 3072)
    assert f["modernbert"].presets["base"] == (22, 768, 12, 1152)


@pytest.mark.parametrize("name", families.NAMES)
def test_next_sentence_only_where_the_record_allows_it(name):
    raw = {"family": name, "next_sentence": True}
    if families.FAMILIES[name].next_sentence:
        assert P.parse(P.Model, "model", raw).next_sentence
    else:
        with pytest.raises(ParamError, match="next-sentence prediction is BERT's objective"):
            P.parse(P.Model, "model", raw)
    assert [n for n, f in families.FAMILIES.items() if f.next_sentence] == ["bert"]
