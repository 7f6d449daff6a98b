"""Every flag of every subcommand, tried with a bad value: the command ends with exit status 2 and one line naming
the flag, before any work. The table is generated from the parser itself, so a flag added without a checked type
(or a line below saying why any text is a valid value, or where it is checked) fails here.

Model.generate and Model.evaluate's own arguments get the same treatment from their signatures."""

from __future__ import annotations

import argparse
import inspect

import pytest

from unified.api import ARGUMENT_RULES, Model
from unified.cli import build_parser, main

# flags whose values are not checked when parsed: why any text will do, or where the value is checked and how a bad
# one is reported (each checked value is tried below, through `main`, on the built-in model)
AT_USE = {
    ("generate", "--task"): "no_such_task",  # get_task: unknown task, naming the registered ones
    ("eval", "--tasks"): "no_such_task",
    ("data check", "--tasks"): "no_such_task",
    ("data shard", "--tasks"): "no_such_task",
    ("data import", "--task"): "no_such_task",
    ("train", "overrides"): "optim.lr=-1",  # the config's own checks
    ("train", "--resume"): "/nonexistent/step-00000001",  # a checkpoint directory, 'auto', 'last-intact', 'never'
    ("predict", "--task"): "no_such_task",
}
FREE_TEXT = {
    ("generate", "--question"): "any text is a question",
    ("generate", "--text"): "any text",
    ("generate", "--phrase"): "any text is a phrase",
    ("generate", "--options"): "any texts are options (the task checks their count)",
    ("generate", "--labels"): "any texts are labels",
    ("serve", "--name"): "any name; requests must repeat it",
    ("serve", "--host"): "an address; uvicorn reports one it cannot bind",
    ("serve", "--api-key"): "any secret",
    ("ui", "--name"): "any name",
    ("ui", "--host"): "an address; Gradio reports one it cannot bind",
    ("merge-adapters", "--name"): "any adapter name",
}


def _flags():
    """(subcommand path, flag name, action) for every flag and positional taking a value."""
    found = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}".strip())
            elif action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                found.append((path, action.option_strings[0] if action.option_strings else action.dest, action))

    walk(build_parser(), "")
    return found


FLAGS = _flags()
BASE = {  # the smallest valid command line of each subcommand, positionals last
    "generate": ["--task", "caption"], "eval": ["--data", "."], "data synth": ["--out", "OUT"],
    "data check": ["."], "data shard": [".", "--out", "OUT"],
    "data import": ["README.md", "--format", "sharegpt", "--out", "OUT"],
    "train": ["training/configs/tiny-smoke.yaml"],
    "predict": ["--data", ".", "--out", "OUT/p.jsonl"], "serve": [], "ui": [], "demo": [], "tasks": [],
    "merge": [".", ".", "--out", "OUT/merged"], "export": [".", "--out", "OUT/exported"],
    "merge-adapters": [".", "--out", "OUT/merged"],
}


def _argv(path: str, flag: str, value: str, tmp_path) -> list[str]:
    base = [a.replace("OUT", str(tmp_path)) for a in BASE[path]]
    if flag.startswith("-"):
        return [*path.split(), *base, flag, value]
    positional = {"dir": 0, "file": 0, "config": 0, "model": None, "overrides": None, "models": 0, "source": 0}[flag]
    if positional is None:  # an optional positional: after the base
        return [*path.split(), *base, value]
    return [*path.split(), value, *base[1:]]


def test_every_flag_is_checked_or_says_why_not():
    unclassified = [(path, flag) for path, flag, action in FLAGS
                    if not hasattr(action.type, "bad") and not action.choices
                    and (path, flag) not in AT_USE and (path, flag) not in FREE_TEXT]
    assert not unclassified, "flags with no checked type: give them one from unified.arguments, or list them here"


@pytest.mark.parametrize("path, flag, action", [f for f in FLAGS if hasattr(f[2].type, "bad") or f[2].choices],
                         ids=[f"{f[0]} {f[1]}" for f in FLAGS if hasattr(f[2].type, "bad") or f[2].choices])
def test_a_bad_value_ends_the_command_with_one_line_naming_the_flag(path, flag, action, tmp_path, capsys):
    bad = action.type.bad if hasattr(action.type, "bad") else "not-a-choice"
    with pytest.raises(SystemExit) as exit_:
        main(_argv(path, flag, bad, tmp_path))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err, err
    assert (flag in err and repr(bad) in err) or "invalid choice" in err, err


@pytest.mark.slow  # each runs the command up to the check, the default model loaded once
@pytest.mark.parametrize("path, flag", sorted(AT_USE), ids=[" ".join(k) for k in sorted(AT_USE)])
def test_values_checked_at_use_end_with_one_line_too(path, flag, tmp_path, capsys):
    value = AT_USE[(path, flag)]
    code = main(_argv(path, flag, value, tmp_path))
    assert code == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after transformers' loading bar
    assert err.startswith("unified: error:"), err
    assert value.split("=")[0] in err, err


def test_model_arguments_are_checked_before_any_work():
    """Each of Model.generate / evaluate's own keyword arguments has a rule; a bad value raises InputError naming it
    (the built-in model is never run: the check comes first)."""
    from unified.errors import InputError

    own = {"batch_size", "max_new_tokens", "return_score", "allow_untrained"}
    media_and_fields = {"self", "task", "fields", "image", "video", "audio", "question", "text", "source_fps",
                        "source_rate"}
    params = set(inspect.signature(Model.__dict__["generate"].fn).parameters) - media_and_fields
    assert params == own and own <= set(ARGUMENT_RULES)
    bad = {"batch_size": 0, "max_new_tokens": -1, "return_score": "yes", "allow_untrained": 1}
    for name, value in bad.items():
        with pytest.raises(InputError, match=name):
            Model.generate(task="caption", video="x.mp4", **{name: value})
    for name, value in {"batch_size": 0, "max_rows": -2}.items():
        with pytest.raises(InputError, match=name):
            Model.evaluate({"caption": []}, **{name: value})
