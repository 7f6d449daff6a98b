"""Settings declared once: every config field carries its meaning, and its Literal's values are the ones enforced."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

import pytest

from unified.errors import ConfigError
from unified.model.configuration import PRESETS, SUB_CONFIGS, PresetName, UnifiedConfig
from unified.settings import check_choices, describe, setting
from unified.training.config import TrainConfig, load_config


def all_fields(cls, prefix=""):
    """(dotted key, field) of every field, walked here with dataclasses alone (not with `describe`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield f"{prefix}{f.name}", f
        inner = [h for h in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(h)]
        if inner:
            sep = "[]." if typing.get_origin(hints[f.name]) is list else "."
            yield from all_fields(inner[0], f"{prefix}{f.name}{sep}")


CONFIG_FIELDS = [*all_fields(TrainConfig), *[(key, f) for name, cls in SUB_CONFIGS.items()
                                              for key, f in all_fields(cls, f"model.{name}.")]]


@pytest.mark.parametrize(("key", "f"), CONFIG_FIELDS, ids=[k for k, _ in CONFIG_FIELDS])
def test_every_field_says_what_it_does(key, f):
    doc = f.metadata.get("doc", "")
    assert doc.strip() and "\n" not in doc, f"{key}: declare it with setting(default, 'one line of meaning')"


def test_describe_lists_every_field_once():
    keys = [row.key for row in describe(TrainConfig)]
    assert keys == [k for k, _ in all_fields(TrainConfig)]
    assert len(keys) == len(set(keys)) and "stages[].train" in keys and "data.synthetic.n_train" in keys
    rows = {row.key: row for row in describe(TrainConfig)}
    from unified.training.config import GROUPS

    assert rows["stages[].train"].choices == rows["optim.lr_scale"].choices == GROUPS  # items / keys of a Literal
    assert rows["model.preset"].choices == ("tiny", "small", "base") and rows["model.preset"].default == '"tiny"'


def test_a_setting_without_meaning_is_refused():
    with pytest.raises(TypeError, match="needs doc"):
        setting(3)


def test_presets_are_the_declared_names():
    assert set(PRESETS) == set(typing.get_args(PresetName))


@dataclass
class _Knobs:
    mode: Literal["a", "b"] = setting("a", "a mode")
    maybe: Literal["x"] | None = setting(None, "optional")
    many: list[Literal["p", "q"]] = setting(doc="several", factory=list)
    keyed: dict[Literal["k"], float] = setting(doc="by key", factory=dict)


@pytest.mark.parametrize(("knobs", "field", "value"), [
    (_Knobs(mode="c"), "mode", "c"),
    (_Knobs(maybe="y"), "maybe", "y"),
    (_Knobs(many=["p", "r", "s"]), "many", ["r", "s"]),
    (_Knobs(keyed={"k": 1.0, "j": 2.0}), "keyed", ["j"]),
])
def test_values_outside_a_literal_are_named(knobs, field, value):
    with pytest.raises(ConfigError) as caught:
        check_choices(knobs)
    assert (caught.value.field, caught.value.value) == (field, value)


def test_literals_hold_in_code_as_in_yaml():
    """The same declaration refuses a value from a YAML override, from a config built in Python, and in the model
    config."""
    with pytest.raises(ConfigError, match="'log_with'='x': expected one of 'auto', 'none'"):
        TrainConfig(log_with="x").validate()
    with pytest.raises(ConfigError, match=r"'stages\[0\].train'=\['foo'\]"):
        load_config(None, ["data.synthetic={n_train: 4}", "stages=[{train: [media, foo]}]"])
    with pytest.raises(ConfigError, match="'fusion.media_attention'='later'"):
        UnifiedConfig.preset("tiny", fusion={"media_attention": "later"})
    check_choices(_Knobs(many=["q"], keyed={"k": 0.5}))  # inside: no error
