"""Two tasks written outside the package, only against the documented protocol (`unified.task_zoo.base.Task`):
importing this module registers them, as a plug-in's entry point would.

- `shape_count`: how many shapes the clip shows, answered as `<int_k>` tokens (grammar "int").
- `pitch_match`: contrastive: a clip and the sentence naming its beep's pitch and the shape it announces map to
  nearby embeddings (grammar "embedding"), scored by recall over the split's distinct sentences.
"""

from __future__ import annotations

from unified.task_zoo import Example, Task, register_task
from unified.tokenizers import int_to_tokens, tokens_to_ints


@register_task("shape_count")
class CountShapes(Task):
    accepts = frozenset({"video"})
    requires = frozenset({"video"})
    prompts = ("how many shapes appear?", "count the shapes.")
    grammar = "int"
    metrics = ("accuracy",)
    row_fields = ("count",)
    target_fields = ("count",)
    example_row = {"video": "clip.mp4", "count": 3}

    def target(self, row):
        return int_to_tokens(int(row["count"]), self.layout.num_int_tokens)

    def parse(self, text, row):
        ints = tokens_to_ints(text, self.layout.num_int_tokens)
        return ints[0] if ints else None

    def truth(self, row):
        return int(row["count"])

    def synthetic_rows(self, scene):
        return [{"video": "{video}", "count": len(scene.shapes)}]


@register_task("pitch_match")
class PitchMatch(Task):
    accepts = frozenset({"video", "audio"})
    requires = frozenset({"video", "audio"})
    prompts = ("embed the sound and the picture.",)
    grammar = "embedding"
    contrastive = True
    metrics = ("recall_at_1", "recall_at_5")
    row_fields = ("sentence",)
    target_fields = ("sentence",)
    example_row = {"video": "clip.mp4", "audio": "clip.mp4", "sentence": "a low beep for the red circle."}

    def pair_example(self, row):
        return Example(f"embed the sentence: {row['sentence']}", {}, None)

    def truth(self, row):
        return str(row["sentence"])

    def synthetic_rows(self, scene):
        shape = scene.shapes[scene.beep_shape]
        return [{"video": "{video}", "audio": "{video}", "sentence": f"a {scene.pitch} beep for the {shape.name}."}]
