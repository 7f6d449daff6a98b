"""The task registry: duplicates raise, lookups name what exists, and an installed plug-in distribution registers
its task through the `unified.tasks` entry-point group."""

import re
import sys
import textwrap

import pytest

from unified.errors import ConfigError, InputError
from unified.task_zoo import registry
from unified.task_zoo.base import Task
from unified.task_zoo.registry import get_task, list_tasks, register_task


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))
    monkeypatch.setattr(registry, "_plugins_loaded", False)


class Minimal(Task):
    """The least a task declares: prompts, metrics, fields, an example row and the three required hooks."""

    prompts = ("say {word}",)
    metrics = ("accuracy",)
    row_fields = ("word",)
    target_fields = ("word",)
    example_row = {"word": "hi"}

    def target(self, row):
        return row["word"]

    def parse(self, text, row):
        return text

    def truth(self, row):
        return row["word"]


def test_register_and_get(clean_registry):
    @register_task("echo_test")
    class Echo(Minimal):
        accepts = frozenset({"video"})
        requires = frozenset({"video"})
        prompts = ("<video> say {word}",)
        example_row = {"video": "a.mp4", "word": "hi"}

    assert "echo_test" in list_tasks()
    task = get_task("echo_test")
    assert isinstance(task, Echo) and task.name == "echo_test"
    example = task.to_example({"video": "a.mp4", "word": "hi"})
    assert (example.text, example.media, example.target) == ("<video> say hi", {"video": ["a.mp4"]}, "hi")


def test_duplicate_name_raises(clean_registry):
    @register_task("dup_test")
    class First(Minimal):
        pass

    with pytest.raises(ConfigError, match="already registered"):
        @register_task("dup_test")
        class Second(Minimal):
            pass


def test_unknown_task_lists_the_registered_ones(clean_registry):
    with pytest.raises(InputError, match="registered:"):
        get_task("no_such_task")


def test_media_the_task_cannot_take_or_misses_raise(clean_registry):
    @register_task("needs_video_test")
    class NeedsVideo(Minimal):
        accepts = frozenset({"video", "audio"})
        requires = frozenset({"video"})
        example_row = {"video": "a.mp4", "word": "hi"}

    task = get_task("needs_video_test")
    with pytest.raises(InputError, match="accepts \\['audio', 'video'\\]"):
        task.to_example({"image": "a.png", "video": "a.mp4", "word": "hi"})
    with pytest.raises(InputError, match="requires \\['video'\\]"):
        task.to_example({"audio": "a.wav", "word": "hi"})


def test_entry_point_plugin_registers(clean_registry, tmp_path, monkeypatch):
    # A real installed distribution: a package plus its .dist-info with entry_points.txt on sys.path.
    site = tmp_path / "site"
    (site / "my_plugin").mkdir(parents=True)
    (site / "my_plugin" / "__init__.py").write_text(textwrap.dedent("""
        from unified.task_zoo.base import Task

        class Shout(Task):
            prompts = ("shout {text}",)
            metrics = ("accuracy",)
            row_fields = ("text",)
            example_row = {"text": "hey"}

            def target(self, row):
                return row["text"].upper()

            def parse(self, text, row):
                return text

            def truth(self, row):
                return row["text"].upper()
    """))
    info = site / "my_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[unified.tasks]\nshout = my_plugin:Shout\n")
    monkeypatch.syspath_prepend(str(site))
    assert "shout" in list_tasks()
    assert get_task("shout").to_example({"text": "hey"}).target == "HEY"
    sys.modules.pop("my_plugin", None)


def test_broken_plugin_is_reported_not_dropped(clean_registry, tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[unified.tasks]\nbroken = no_such_module_xyz:Task\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ConfigError, match="unified.tasks:broken"):
        list_tasks()


@pytest.mark.parametrize("change, what, reason", [
    ({"grammar": "integer"}, "grammar", "expected one of"),
    ({"metrics": ("accuracy", "f1_macro")}, "metrics", "not registered metrics"),
    ({"metrics": ()}, "metrics", "at least one metric"),
    ({"main_metric": "mae"}, "main_metric", "not one of its metrics"),
    ({"prompts": ("say {wrd}",)}, "prompts", "uses ['wrd']"),
    ({"prompts": ()}, "prompts", "at least one prompt"),
    ({"accepts": frozenset({"smell"})}, "accepts", "unknown modalities"),
    ({"requires": frozenset({"video"})}, "requires", "not all in accepts"),
    ({"target_fields": ("answer",)}, "target_fields", "not all in row_fields"),
    ({"grammar": "loc"}, "answer_length", "define answer_length"),
    ({"grammar": "embedding"}, "contrastive", "only they use the 'embedding' grammar"),
    ({"contrastive": True, "grammar": "embedding"}, "pair_example", "must define pair_example"),
    ({"example_row": {}}, "example_row", "declare a complete training row"),
    ({"example_row": {"wrd": "hi"}}, "example_row", "missing field(s) ['word']"),
    ({"parse": Task.parse}, "parse", "define parse(row)"),
])
def test_registration_validates_the_whole_task(clean_registry, change, what, reason):
    """Every mistake raises at registration as a ConfigError naming the task and the attribute, never later."""
    broken = type("Broken", (Minimal,), dict(change))
    with pytest.raises(ConfigError, match=re.escape(reason)) as caught:
        register_task("broken_test")(broken)
    assert caught.value.field == f"task 'broken_test' {what}"
    assert "broken_test" not in registry.TASKS  # a task that failed its checks is not registered


def test_task_options_reach_the_task_or_raise_naming_it(clean_registry):
    from unified.task_zoo import build_tasks
    from unified.tokenizers import VocabLayout

    layout = VocabLayout(num_loc_bins=200)
    tasks = build_tasks(["video_mcqa", "grounding"], {"video_mcqa": {"labels": ["P", "Q", "R", "S"]}}, layout)
    assert tasks["video_mcqa"].labels == ("P", "Q", "R", "S") and tasks["grounding"].layout is layout
    with pytest.raises(ConfigError, match="task_options.video_mcqa"):
        build_tasks(["video_mcqa"], {"video_mcqa": {"modes": "rank"}})
    with pytest.raises(ConfigError, match="task_options"):
        build_tasks(["vqa"], {"video_mcqa": {"mode": "rank"}})  # options for a task the run does not have
    with pytest.raises(InputError, match="no task registered"):
        build_tasks(["no_such_task"])
