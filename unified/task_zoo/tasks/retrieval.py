"""`retrieval`: a clip and its matching text map to nearby embeddings (projection + L2 norm, InfoNCE in training);
evaluated by recall@k of the right text among the split's distinct texts (`Task.evaluate`, "embed" mode)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unified.task_zoo.base import Example, Task
from unified.task_zoo.registry import register_task


@register_task("retrieval")
class Retrieval(Task):
    accepts = frozenset({"image", "video", "audio"})
    requires = frozenset()
    prompts = ("embed the clip.",)
    text_prompt = "embed the text: {text}"
    grammar = "embedding"
    contrastive = True
    metrics = ("recall_at_1", "recall_at_5")
    row_fields = ("text",)
    target_fields = ("text", "group")  # the media side needs no text
    optional_fields = ("group",)  # rows of one group count each other's texts as right
    example_row = {"video": "clips/train_00001.mp4", "text": "a red circle moves left."}

    def to_example(self, row: Mapping[str, Any], *, rng=None, with_target: bool = True) -> Example:
        """The media side (query); `pair_example` gives the matching text side."""
        self.check_row(row, with_target=False)
        media = self.media_of(row)
        placeholders = "".join(f"<{m}>" * len(v) for m, v in media.items())
        return Example(f"{placeholders} {self.prompts[0]}".strip(), media, None)

    def pair_example(self, row: Mapping[str, Any]) -> Example:
        return Example(self.text_prompt.format(text=row["text"]), {}, None)

    def target(self, row: Mapping[str, Any]) -> str:
        return str(row["text"])

    def parse(self, text: str, row: Mapping[str, Any]) -> Any:
        return text

    def truth(self, row: Mapping[str, Any]) -> str:
        return str(row.get("group", row["text"]))

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        return "(embed the clip)", str(row["text"])
