"""The README's task example is real code: it runs, registers, and its example row becomes the prompt and target
it prints."""

from __future__ import annotations

import re
from pathlib import Path

from unified.task_zoo import registry

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_add_a_task_example_runs(capsys):
    block = next(b for b in python_blocks() if '@register_task("count_shapes")' in b)
    try:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
        printed = capsys.readouterr().out.strip()
        prompt, target = printed.split(" -> ")
        assert prompt.startswith("<video> ") and prompt[len("<video> "):] in ("how many shapes appear?",
                                                                               "count the shapes.")
        from unified.tokenizers import tokens_to_values

        assert abs(tokens_to_values(target)[0] - 3.0) < 0.05  # mu-law value tokens round-trip the count
    finally:
        registry.TASKS.pop("count_shapes", None)
