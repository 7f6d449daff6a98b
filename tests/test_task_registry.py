"""The task registry: duplicates raise, lookups name what exists, and an installed plug-in distribution registers
its task through the `unified.tasks` entry-point group."""

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


def test_register_and_get(clean_registry):
    @register_task("echo_test")
    class Echo(Task):
        accepts = frozenset({"video"})
        requires = frozenset({"video"})
        prompts = ("<video> say {word}",)

        def target(self, row):
            return row["word"]

    assert "echo_test" in list_tasks()
    task = get_task("echo_test")
    assert isinstance(task, Echo) and task.name == "echo_test"
    example = task.to_example({"video": "a.mp4", "word": "hi"})
    assert (example.text, example.media, example.target) == ("<video> say hi", {"video": ["a.mp4"]}, "hi")


def test_duplicate_name_raises(clean_registry):
    @register_task("dup_test")
    class First(Task):
        pass

    with pytest.raises(ConfigError, match="already registered"):
        @register_task("dup_test")
        class Second(Task):
            pass


def test_unknown_task_lists_the_registered_ones(clean_registry):
    with pytest.raises(InputError, match="registered:"):
        get_task("no_such_task")


def test_media_the_task_cannot_take_or_misses_raise(clean_registry):
    @register_task("needs_video_test")
    class NeedsVideo(Task):
        accepts = frozenset({"video", "audio"})
        requires = frozenset({"video"})
        prompts = ("what",)

        def target(self, row):
            return "x"

    task = get_task("needs_video_test")
    with pytest.raises(InputError, match="accepts \\['audio', 'video'\\]"):
        task.to_example({"image": "a.png", "video": "a.mp4"})
    with pytest.raises(InputError, match="requires \\['video'\\]"):
        task.to_example({"audio": "a.wav"})


def test_entry_point_plugin_registers(clean_registry, tmp_path, monkeypatch):
    # A real installed distribution: a package plus its .dist-info with entry_points.txt on sys.path.
    site = tmp_path / "site"
    (site / "my_plugin").mkdir(parents=True)
    (site / "my_plugin" / "__init__.py").write_text(textwrap.dedent("""
        from unified.task_zoo.base import Task

        class Shout(Task):
            prompts = ("shout {text}",)

            def target(self, row):
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
