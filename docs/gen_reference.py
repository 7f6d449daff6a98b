"""Writes the generated reference pages at build time (mkdocs-gen-files runs this file):

reference/configuration.md   every training-config and model-config field: key, type, default, allowed values,
                              meaning (`unified.settings.describe` over the dataclasses)
reference/tasks.md           every registered task: inputs, grammar, metrics, fields, options, prompts, example row

Nothing here is written by hand, so the pages cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import typing

import mkdocs_gen_files

from unified.model.configuration import PRESETS, SUB_CONFIGS
from unified.settings import describe
from unified.task_zoo import get_task, list_tasks
from unified.training.config import TrainConfig


def cell(text: str) -> str:
    """Table-cell text: pipes escaped, and `<` outside code spans written as an entity (`<image>` is a token here,
    not an HTML tag; `{` escaped, or attr_list reads a trailing `{...}` as attributes)."""
    parts = str(text).replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace("{", "\\{") for i, p in enumerate(parts))


def table(rows) -> list[str]:
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for row in rows:
        allowed = ", ".join(f"`{json.dumps(v)}`" for v in row.choices) if row.choices else ""
        default = row.default.replace("|", "\\|")  # in a code span: only the table's pipes need escaping
        lines.append(f"| `{row.key}` | {cell(row.type)} | `{default}` | {cell(allowed)} | "
                     f"{cell(row.meaning)} |")
    return lines


def configuration() -> str:
    out = ["# Configuration reference", "",
           ("Generated from the config dataclasses when the site is built (`unified/training/config.py`, "
           "`unified/model/configuration.py`): each key with its type, default, allowed values and meaning."),
           ("Keys are written as in a YAML config and as dotted overrides: "
           "`unified train CONFIG optim.lr=3e-4 model.fusion.mode=concat`. An unknown key, a value of the wrong "
           "type or outside its allowed values, and a setting that would do nothing raise `ConfigError` naming "
           "the key (see [Errors](../errors.md))."), "",
           "## Training config", "",
           "`unified.training.TrainConfig`, read by `load_config(path, overrides)`.", ""]
    hints = typing.get_type_hints(TrainConfig)
    top = []
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        section = next((h for h in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(h)), None)
        if section is None:
            top.extend(row for row in describe(TrainConfig) if row.key == f.name)
            continue
        prefix = f"{f.name}[]." if typing.get_origin(hint) is list else f"{f.name}."
        out += [f"### {f.name}", "", f"*{cell(f.metadata['doc'])}*. " + inspect.cleandoc(section.__doc__ or ""), ""]
        out += [*table(describe(section, prefix)), ""]
    out += ["### Top-level keys", "", *table(top), ""]
    out += ["## Model config", "",
            ("`unified.model.UnifiedConfig`: five sub-configs. In a training config they go under `model.` as "
            "overrides of the preset (`model.text.d_model=128`); in Python, "
            "`UnifiedConfig.preset(\"small\", text={\"d_model\": 128})`. The defaults below are the dataclasses'; "
            "the presets (last table) set some of them."), ""]
    for name, cls in SUB_CONFIGS.items():
        out += [f"### model.{name}", "", inspect.cleandoc(cls.__doc__ or ""), ""]
        out += [*table(describe(cls, f"model.{name}.")), ""]
    out += ["### Presets", "", "What each preset sets (everything else keeps the defaults above).", "",
            "| preset | " + " | ".join(SUB_CONFIGS) + " |", "|---|" + "---|" * len(SUB_CONFIGS)]
    for preset, parts in PRESETS.items():
        cells = [", ".join(f"{k}={v}" for k, v in parts.get(name, {}).items()) or "-" for name in SUB_CONFIGS]
        out.append(f"| `{preset}` | " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def options(task) -> str:
    params = [p for p in inspect.signature(type(task).__init__).parameters.values()
              if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    shown = [f"`{p.name}` (default `{json.dumps(p.default, default=str)}`)" for p in params]
    return ", ".join([*shown, f"`max_new_tokens` (default `{task.max_new_tokens}`, every task)"])


def tasks() -> str:
    names = list_tasks()
    out = ["# Tasks", "",
           (f"The {len(names)} registered tasks, generated from the registry (`unified.task_zoo`) when the site is "
           "built; `unified tasks` prints the same from the shell. Options go under `task_options: {task: {...}}` "
           "in a training config and are saved with the model. How to add one: [Writing a task]"
           "(../writing-a-task.md)."), "",
           "| task | accepts (requires) | answer grammar | metrics (main first) |", "|---|---|---|---|"]
    built = {name: get_task(name) for name in names}
    for name, task in built.items():
        d = task.describe()
        main = task.main_metric or task.metrics[0]
        metrics = [main, *[m for m in d["metrics"] if m != main]]
        out.append(f"| [`{name}`](#{name}) | {', '.join(d['accepts']) or 'text'} "
                   f"({', '.join(d['requires']) or 'none'}) | `{d['grammar']}` | {', '.join(metrics)} |")
    out.append("")
    for name, task in built.items():
        d, cls = task.describe(), type(task)
        doc = cls.__doc__ or sys.modules[cls.__module__].__doc__ or ""
        out += [f"## {name}", "", inspect.cleandoc(doc), "",
                "| | |", "|---|---|",
                f"| accepts / requires | {', '.join(d['accepts']) or '-'} / {', '.join(d['requires']) or '-'} |",
                f"| grammar / answer | `{d['grammar']}` / `{d['answer']}` |",
                f"| metrics | {', '.join(d['metrics'])} (main: {task.main_metric or task.metrics[0]}) |",
                f"| row fields | {', '.join(f'`{f}`' for f in d['fields']) or '-'} |",
                f"| optional fields | {', '.join(f'`{f}`' for f in d['optional_fields']) or '-'} |",
                (f"| target fields (training and evaluation only) | "
                f"{', '.join(f'`{f}`' for f in d['target_fields']) or '-'} |"),
                f"| derived fields | {', '.join(f'`{f}`' for f in d['derived_fields']) or '-'} |",
                f"| options | {options(task)} |", "",
                "Prompts (one sampled per training example, the first in evaluation):", ""]
        out += [f"- `{cell(p)}`" for p in d["prompts"]]
        out += ["", "Example row:", "", "```json", json.dumps(d["example_row"]), "```", ""]
    return "\n".join(out) + "\n"


with mkdocs_gen_files.open("reference/configuration.md", "w") as page:
    page.write(configuration())
with mkdocs_gen_files.open("reference/tasks.md", "w") as page:
    page.write(tasks())
