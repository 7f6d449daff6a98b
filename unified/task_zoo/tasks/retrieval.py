"""`retrieval`: a clip and its matching text map to nearby embeddings (projection + L2 norm, InfoNCE in training);
evaluated by recall@k of the right text among the candidates, and Spearman for graded similarity."""

from __future__ import annotations

from typing import Any, Mapping

from unified.task_zoo.base import Example, Task
from unified.task_zoo.registry import register_task


@register_task("retrieval")
class Retrieval(Task):
    accepts = frozenset({"image", "video", "audio"})
    requires = frozenset()
    prompts = ("embed the clip.",)
    text_prompt = "embed the text: {text}"
    grammar = "embedding"
    head = "embed"
    metrics = ("recall_at_1", "recall_at_5")
    row_fields = ("text",)
    target_fields = ("text",)  # the media side needs no text

    def to_example(self, row: Mapping[str, Any], *, rng=None, with_target: bool = True) -> Example:
        """The media side (query); `text_example` gives the matching text side."""
        self.check_row(row, with_target=False)
        media = self.media_of(row)
        placeholders = "".join(f"<{m}>" * len(v) for m, v in media.items())
        return Example(f"{placeholders} {self.prompts[0]}".strip(), media, None)

    def text_example(self, row: Mapping[str, Any]) -> Example:
        return Example(self.text_prompt.format(text=row["text"]), {}, None)

    def target(self, row: Mapping[str, Any]) -> str:
        return str(row["text"])

    def parse(self, text: str, row: Mapping[str, Any]) -> Any:
        return text

    def truth(self, row: Mapping[str, Any]) -> str:
        return str(row.get("group", row["text"]))
