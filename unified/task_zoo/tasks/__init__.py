"""Built-in tasks, imported explicitly so each registers itself exactly once."""

from unified.task_zoo.tasks.captioning import Caption
from unified.task_zoo.tasks.classify import Classify
from unified.task_zoo.tasks.clip_text_match import ClipTextMatch
from unified.task_zoo.tasks.grounding import Grounding, TemporalGrounding
from unified.task_zoo.tasks.masked_frames import MaskedFrames
from unified.task_zoo.tasks.mcqa import AudioVideoMCQA, MultipleChoice, VideoMCQA
from unified.task_zoo.tasks.regress import Regress
from unified.task_zoo.tasks.retrieval import Retrieval
from unified.task_zoo.tasks.span_corruption import SpanCorruption
from unified.task_zoo.tasks.tags import Tags
from unified.task_zoo.tasks.text2text import Text2Text
from unified.task_zoo.tasks.vqa import VQA

__all__ = ["VQA", "AudioVideoMCQA", "Caption", "Classify", "ClipTextMatch", "Grounding", "MaskedFrames",
           "MultipleChoice", "Regress", "Retrieval", "SpanCorruption", "Tags", "TemporalGrounding", "Text2Text",
           "VideoMCQA"]
