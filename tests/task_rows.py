"""Hand-written rows for every built-in task (media written to a temp dir), plus a tiny model, tokenizer and
processor that fit them. Independent of the synthetic world, so the task tests do not depend on it."""

from __future__ import annotations

import numpy as np
from media_fixtures import write_index_video, write_tone
from PIL import Image

from unified.model import UnifiedConfig, UnifiedModel
from unified.processing import UnifiedProcessor
from unified.samples import CLIP
from unified.tokenizers import UnifiedTokenizer

WORDS = ("a red circle moves left and a blue square appears which way does the shape move how many shapes "
         "are there what colour is it describe the clip right up down green yellow triangle first after beep high "
         "low when visible continue sequence values embed text answer options question choose pick one "
         "W. X. Y. Z. V. U. P Q R S 0 1 2 3 4 5 6 7 8 9 ? : , .")


def write_media(directory) -> dict[str, str]:
    video = write_index_video(directory / "clip.mp4", num_frames=8, fps=4, size=(64, 48), with_audio_hz=440.0)
    audio = write_tone(directory / "tone.wav", 880.0, 1.0, sampling_rate=16000)
    image = directory / "still.png"
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[10:30, 20:40] = (255, 0, 0)
    Image.fromarray(pixels).save(image)
    return {"video": str(video), "audio": str(audio), "image": str(image)}


def task_rows(media: dict[str, str]) -> dict[str, list[dict]]:
    v, a, i = media["video"], media["audio"], media["image"]
    return {
        "caption": [{"video": v, "caption": "a red circle moves left", "captions": ["a red circle moves left",
                                                                                    "the red circle moves left"]},
                    {"audio": a, "caption": "a high beep"}],
        "vqa": [{"video": v, "question": "what colour is the circle?", "answer": "red"},
                {"image": i, "question": "what colour is it?", "answer": "red"}],
        "video_mcqa": [{"video": v, "question": "which way does the shape move?",
                        "options": ["left", "right", "up"], "answer_index": 0},
                       {"video": v, "question": "how many shapes are there?", "options": ["1", "2", "3", "4"],
                        "answer_index": 2}],
        "audio_video_mcqa": [{"video": v, "audio": v, "question": "was the beep high or low?",
                              "options": ["high", "low"], "answer_index": 1}],
        "grounding": [{"image": i, "phrase": "red square", "box": [20, 10, 40, 30], "image_size": [64, 48]}],
        "temporal_grounding": [{"video": v, "question": "when is the red circle visible?", "span": [0.5, 1.25],
                                "duration": 2.0}],
        "classify": [{"video": v, "label": "left", "labels": ["left", "right", "up", "down"]}],
        "regress": [{"video": v, "question": "how many shapes are there?", "values": [3.0], "value_range": [0, 5]},
                    {"inputs": [1.0, 2.0, 3.0, 4.0, 5.0], "values": [6.0, 7.0, 8.0], "value_range": [0, 10]}],
        "text2text": [{"text": "a red circle moves left. which way does the red circle move?", "target": "left"}],
        "tags": [{"video": v, "tags": ["red", "circle", "left"]}, {"image": i, "tags": ["red"]}],
        "span_corruption": [{"text": "a red circle moves left and a blue square moves up"},
                            {"video": v, "text": "the red circle moves left"}],
        "clip_text_match": [{"video": v, "text": "a red circle moves left"},
                            {"image": i, "text": "a red square", "match": False},
                            {"video": v, "text": "a blue square moves up"}],
        "masked_frames": [{"video": v}, {"video": str(CLIP)}],
        "retrieval": [{"video": v, "text": "a red circle moves left", "group": 0},
                      {"image": i, "text": "a red square", "group": 1},
                      {"audio": a, "text": "a high beep", "group": 2}],
    }


def tiny_stack(seed: int = 0):
    """(tokenizer, processor, model): the tiny preset over a vocabulary trained on `WORDS`."""
    import torch

    tokenizer = UnifiedTokenizer.train([WORDS] * 8, text_vocab_size=96, hard_vocab_limit=False)
    processor = UnifiedProcessor(tokenizer, image_size=32, video_fps=4.0)
    config = UnifiedConfig.preset("tiny", text={"vocab_size": tokenizer.vocab_size,
                                                "image_token_id": tokenizer.image_token_id,
                                                "video_token_id": tokenizer.video_token_id,
                                                "audio_token_id": tokenizer.audio_token_id})
    torch.manual_seed(seed)
    return tokenizer, processor, UnifiedModel(config)


def saved_tiny_model(directory, seed: int = 0):
    """`tiny_stack(seed)` saved to `directory` and loaded back through the front door (`unified.Model`)."""
    from unified import Model

    _, processor, network = tiny_stack(seed)
    Model(network, processor).save_pretrained(directory)
    return Model.from_pretrained(directory)
