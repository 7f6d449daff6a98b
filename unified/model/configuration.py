"""`UnifiedConfig`: one transformers config with nested, validated sub-configs and named presets.

    >>> cfg = UnifiedConfig.preset("tiny", text={"vocab_size": 2419})
    >>> cfg.text.d_model, cfg.fusion.mode
    (64, 'xattn')

Sub-configs are small dataclasses (text, vision, audio, resampler, fusion), stored as dicts in `config.json` and
restored on load. Unknown keys anywhere raise `ConfigError` naming them; `validate()` checks that the fields agree.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from transformers import PretrainedConfig

from unified.errors import ConfigError
from unified.model.backbone import build_backbone_config, text_fields
from unified.model.pretrained import read_backbone_config
from unified.settings import check_choices, setting

PresetName = Literal["tiny", "small", "base"]  # the keys of PRESETS below


@dataclass
class TextConfig:
    """`text`: the token stream: vocabulary, the encoder-decoder's sizes, positions, initialisation and loss."""

    vocab_size: int = setting(2419, "rows of the shared embedding; set from the tokenizer")
    d_model: int = setting(256, "width of the encoder and decoder")
    num_encoder_layers: int = setting(4, "encoder layers")
    num_decoder_layers: int = setting(4, "decoder layers")
    num_heads: int = setting(4, "attention heads")
    head_dim: int = setting(64, "width of each head (even: rotary positions)")
    d_ff: int = setting(768, "gated MLP width: three d_model x d_ff matrices, the cost of a plain MLP 1.5x as wide")
    dropout: float = setting(0.0, "dropout in the encoder and decoder layers")
    norm_eps: float = setting(1e-6, "RMSNorm epsilon")
    rope_theta: float = setting(10000.0, "rotary position base")
    rope_scaling: dict | None = setting(None, 'longer contexts: {"type": "linear" or "yarn", "factor": f}')
    max_position_embeddings: int = setting(2048, "the trained context; YaRN stretches it by its factor")
    init_gain: float = setting(1.0, "every Linear / Conv weight ~ N(0, init_gain² / fan_in), at any width")
    embed_init_std: float = setting(1.0, "std of the tied embedding; logits read states * d_model ** -0.5 (T5)")
    pad_token_id: int = setting(0, "padding id (a text backbone sets its own)")
    eos_token_id: int = setting(1, "end-of-sequence id")
    bos_token_id: int = setting(3, "beginning-of-sequence id")
    decoder_start_token_id: int = setting(0, "the decoder's first input (T5's convention: <pad>)")
    image_token_id: int | None = setting(None, "the <image> placeholder's id, from the tokenizer")
    video_token_id: int | None = setting(None, "the <video> placeholder's id, from the tokenizer")
    audio_token_id: int | None = setting(None, "the <audio> placeholder's id, from the tokenizer")
    embed_dim: int = setting(128, "width of the embedding head's L2-normalised vectors (retrieval)")
    ordinal_ranges: list | None = setting(None, "[[start, stop], ...] of the numbered ranges (loc, val, time) whose "
                                                "embeddings start smooth in the bin; from the tokenizer")
    ordinal_width: float = setting(0.02, "the smooth start's kernel width, as a fraction of a range")
    ordinal_noise: float = setting(0.25, "share of each ordinal row's variance that stays independent noise")
    ordinal_loss_sigma: float = setting(0.0, "HL-Gauss target smoothing over ordinal_ranges, in bins (0 = plain "
                                             "cross-entropy; 0.75 recommended)")
    value_feature: bool = setting(False, "add a learnt function of each value token's value to its input embedding")
    value_ids: list | None = setting(None, "the value bins' [start, stop), from the tokenizer (for value_feature)")
    pretrained_path: str | None = setting(None, "a local pretrained encoder-decoder (T5, Flan-T5, mT5, BART, "
                                                "T5Gemma, T5Gemma 2) as the backbone")
    backbone: dict | None = setting(None, "that backbone's transformers config, read from pretrained_path once and "
                                          "saved with ours")


@dataclass
class VisionConfig:
    """`vision`: images and video frames to patch features."""

    image_size: int = setting(224, "frame side in pixels (a multiple of patch_size)")
    patch_size: int = setting(16, "patch side: 16x16 patches through ResNet-style conv blocks (OFA, Gato)")
    num_channels: int = setting(3, "input channels")
    stem_channels: int = setting(64, "channels of the patch stem's conv blocks")
    stem_blocks: int = setting(2, "conv blocks of the patch stem")
    hidden_size: int = setting(256, "width of the patch features")
    image_mean: tuple = setting((0.5, 0.5, 0.5), "per-channel normalisation mean")
    image_std: tuple = setting((0.5, 0.5, 0.5), "per-channel normalisation std")
    max_frames: int = setting(64, "most frames per video the model takes (rows of the global perceiver's frame "
                                  "embedding)")
    pretrained_path: str | None = setting(None, "a local vision model (SigLIP, CLIP, DINOv2, VideoMAE, T5Gemma 2's "
                                                "tower) instead of the stem")
    backbone: dict | None = setting(None, "its transformers config, read from pretrained_path once and saved with "
                                          "ours")
    freeze: bool = setting(True, "keep a pretrained vision model's weights frozen")


@dataclass
class AudioConfig:
    """`audio`: log-mel features to audio tokens."""

    n_mels: int = setting(80, "mel bins of the features (a pretrained encoder sets its own)")
    hidden_size: int = setting(256, "width of the audio features")
    num_latents: int = setting(32, "audio tokens per item")
    resampler: Literal["perceiver", "pool"] = setting("perceiver", "perceiver: Flamingo's, global; pool: "
                                                                   "num_latents time windows averaged")
    pretrained_path: str | None = setting(None, "a local Whisper or Audio Spectrogram Transformer instead of the "
                                                "conv stem")
    backbone: dict | None = setting(None, "its transformers config, read from pretrained_path once and saved with "
                                          "ours")
    freeze: bool = setting(True, "keep a pretrained audio encoder's weights frozen")


@dataclass
class ResamplerConfig:
    """`resampler`: frame features to a fixed or per-frame number of media tokens."""

    mode: Literal["global", "per_frame", "pool3d"] = setting("global", "global: Flamingo's latents per item; "
                                                                       "per_frame: Apollo's; pool3d: PLLaVA's pooling")
    num_latents: int = setting(64, "latents per media item (global; Flamingo: 64)")
    latents_per_frame: int = setting(8, "latents per frame (per_frame; Apollo: 8-32)")
    depth: int = setting(2, "perceiver layers (the audio perceiver uses it too)")
    num_heads: int = setting(4, "perceiver attention heads")
    head_dim: int = setting(64, "perceiver head width")
    pool_frames: int = setting(4, "pool3d output frames")
    pool_hw: int = setting(4, "pool3d output side (pool_hw x pool_hw tokens per output frame)")


@dataclass
class FusionConfig:
    """`fusion`: how media tokens reach the text stream."""

    mode: Literal["xattn", "concat", "both"] = setting("xattn", "xattn: gated cross-attention; concat: latents "
                                                                "spliced at the placeholders; both")
    every_k_layers: int = setting(1, "a gated cross-attention block before every k-th encoder layer")
    in_decoder: bool = setting(False, "also before every k-th decoder layer")
    media_attention: Literal["previous", "all"] = setting("previous", "previous: a token sees the media item just "
                                                                      "before it (Flamingo); all: every item")
    gate_init: float = setting(0.0, "tanh-gate start: 0 keeps a pretrained LM as it was; 0.5 from scratch")


SUB_CONFIGS = {"text": TextConfig, "vision": VisionConfig, "audio": AudioConfig, "resampler": ResamplerConfig,
               "fusion": FusionConfig}

PRESETS: dict[PresetName, dict[str, dict[str, Any]]] = {
    # tests: well under 2M parameters with a ~2.4k vocabulary
    "tiny": {"text": dict(d_model=64, num_encoder_layers=2, num_decoder_layers=2, num_heads=4, head_dim=16, d_ff=128),
             "vision": dict(image_size=32, patch_size=16, stem_channels=16, stem_blocks=1, hidden_size=64),
             "audio": dict(hidden_size=64, num_latents=4),
             "resampler": dict(num_latents=8, latents_per_frame=2, depth=1, num_heads=2, head_dim=16,
                               pool_frames=2, pool_hw=2)},
    # the default model: ~12.4M parameters (under 25 MB in bf16), small enough to ship inside the package
    "small": {"text": dict(d_model=256, num_encoder_layers=4, num_decoder_layers=4, num_heads=4, head_dim=64,
                           d_ff=768),
              "vision": dict(image_size=64, patch_size=16, stem_channels=32, stem_blocks=2, hidden_size=256),
              "audio": dict(hidden_size=256, num_latents=16),
              "resampler": dict(num_latents=32, latents_per_frame=8, depth=1, num_heads=4, head_dim=64),
              "fusion": dict(every_k_layers=2)},
    # roughly T5-base scale
    "base": {"text": dict(d_model=768, num_encoder_layers=12, num_decoder_layers=12, num_heads=12, head_dim=64,
                          d_ff=2048),
             "vision": dict(image_size=224, patch_size=16, stem_channels=64, stem_blocks=2, hidden_size=768),
             "audio": dict(hidden_size=768, num_latents=32),
             "resampler": dict(num_latents=64, latents_per_frame=16, depth=2, num_heads=12, head_dim=64)},
}


def _build(name: str, cls, value: Any):
    # Sub-configs arrive as dataclasses (code), dicts (config.json) or None (defaults); unknown keys fail loudly.
    if value is None:
        return cls()
    if isinstance(value, cls):
        return copy.deepcopy(value)
    if not isinstance(value, Mapping):
        raise ConfigError(name, value, f"expected a mapping of {cls.__name__} fields")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", value[unknown[0]], f"unknown field; known: {sorted(known)}")
    data = dict(value)
    for key in ("image_mean", "image_std"):
        if key in data:
            data[key] = tuple(data[key])
    return cls(**data)


class UnifiedConfig(PretrainedConfig):
    """The whole model's configuration: `text`, `vision`, `audio`, `resampler`, `fusion` sub-configs."""

    model_type = "unified"
    sub_config_names = tuple(SUB_CONFIGS)

    def __init__(self, text=None, vision=None, audio=None, resampler=None, fusion=None, **kwargs):
        self.text = _build("text", TextConfig, text)
        self.vision = _build("vision", VisionConfig, vision)
        self.audio = _build("audio", AudioConfig, audio)
        self.resampler = _build("resampler", ResamplerConfig, resampler)
        self.fusion = _build("fusion", FusionConfig, fusion)
        # A pretrained part's own config is read from its directory once and stored in ours: a saved model then
        # builds that part without the directory (weights come from our safetensors).

        if self.vision.pretrained_path and self.vision.backbone is None:
            self.vision.backbone = read_backbone_config(self.vision.pretrained_path, "vision.pretrained_path",
                                                        "vision_config")
        if self.audio.pretrained_path and self.audio.backbone is None:
            self.audio.backbone = read_backbone_config(self.audio.pretrained_path, "audio.pretrained_path")
        t = self.text
        if t.pretrained_path and t.backbone is None:
            t.backbone = read_backbone_config(t.pretrained_path, "text.pretrained_path")
        if t.backbone:
            fixed = text_fields(t.backbone)
            fixed["vocab_size"] = max(fixed["vocab_size"], t.vocab_size if t.vocab_size != TextConfig.vocab_size
                                      else 0)  # a pretrained row is never dropped
            for key, value in fixed.items():
                setattr(t, key, value)
            kwargs["tie_word_embeddings"] = False  # the backbone ties its own, by its own config
        kwargs.setdefault("tie_word_embeddings", True)
        for key in ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id"):
            kwargs[key] = getattr(t, key)
        kwargs["is_encoder_decoder"] = True
        self.use_cache = bool(kwargs.pop("use_cache", True))  # generate keeps a KV cache unless told otherwise
        super().__init__(**kwargs)
        self.validate()

    def get_text_config(self, decoder=None, encoder=None):
        # A pretrained backbone's caches (layer counts, sliding windows) follow its own config, as in its own model.
        if self.text.backbone:
            return self.backbone_config().get_text_config(decoder=decoder, encoder=encoder)
        return super().get_text_config(decoder=decoder, encoder=encoder)

    def backbone_config(self):
        """The pretrained text backbone's transformers config (vocabulary grown to ours), built once: generation
        asks for it at every step."""
        key = (id(self.text.backbone), self.text.vocab_size)
        cached = self.__dict__.get("_backbone_cache")
        if cached is None or cached[0] != key:
            cached = (key, build_backbone_config(self.text.backbone, self.text.vocab_size))
            self.__dict__["_backbone_cache"] = cached
        return cached[1]

    # Flat names transformers' generation and cache code read.
    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size

    @vocab_size.setter
    def vocab_size(self, value: int) -> None:  # `resize_token_embeddings` writes the new size here
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError("text.vocab_size", value, "expected a positive number of rows")
        self.text.vocab_size = int(value)

    @property
    def hidden_size(self) -> int:
        return self.text.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.text.num_decoder_layers

    @property
    def num_attention_heads(self) -> int:
        return self.text.num_heads

    @property
    def num_key_value_heads(self) -> int:
        return self.text.num_heads

    @property
    def head_dim(self) -> int:
        return self.text.head_dim

    @classmethod
    def preset(cls, name: str, **overrides: Mapping[str, Any]) -> UnifiedConfig:
        """A named preset ("tiny", "small", "base"); `overrides` per sub-config, e.g. `fusion={"mode": "concat"}`."""
        if name not in PRESETS:
            raise ConfigError("preset", name, f"unknown preset; known: {sorted(PRESETS)}")
        parts = {key: dict(value) for key, value in PRESETS[name].items()}
        extra = {}
        for key, value in overrides.items():
            if key in SUB_CONFIGS:
                if not isinstance(value, Mapping):
                    raise ConfigError(key, value, "expected a mapping of overrides")
                parts[key] = {**parts.get(key, {}), **value}
            else:
                extra[key] = value
        return cls(**parts, **extra)

    def validate(self) -> UnifiedConfig:
        """Check the sub-configs agree; raise `ConfigError` naming the first bad field."""
        t, v, a, r, f = self.text, self.vision, self.audio, self.resampler, self.fusion
        for name in SUB_CONFIGS:  # the Literal fields: allowed values declared once, on the dataclasses above
            check_choices(getattr(self, name), f"{name}.")
        for name, value in (("text.vocab_size", t.vocab_size), ("text.d_model", t.d_model),
                            ("text.num_heads", t.num_heads), ("text.head_dim", t.head_dim), ("text.d_ff", t.d_ff),
                            ("text.num_encoder_layers", t.num_encoder_layers),
                            ("text.num_decoder_layers", t.num_decoder_layers),
                            ("vision.hidden_size", v.hidden_size), ("audio.hidden_size", a.hidden_size),
                            ("audio.num_latents", a.num_latents), ("resampler.num_latents", r.num_latents),
                            ("resampler.depth", r.depth), ("resampler.num_heads", r.num_heads),
                            ("resampler.head_dim", r.head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, value, "expected a positive int")
        if t.head_dim % 2:
            raise ConfigError("text.head_dim", t.head_dim, "rotary embeddings need an even head_dim")
        if not 0.0 <= t.dropout < 1.0:
            raise ConfigError("text.dropout", t.dropout, "expected a probability in [0, 1)")
        if t.ordinal_ranges is not None:
            for pair in t.ordinal_ranges:
                if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                        or not 0 <= int(pair[0]) < int(pair[1]) <= t.vocab_size):
                    raise ConfigError("text.ordinal_ranges", t.ordinal_ranges,
                                      f"expected [start, stop] pairs inside the vocabulary (0..{t.vocab_size})")
        if not 0.0 < t.ordinal_width <= 1.0:
            raise ConfigError("text.ordinal_width", t.ordinal_width, "expected a fraction in (0, 1]")
        if not (isinstance(t.ordinal_loss_sigma, (int, float)) and 0.0 <= t.ordinal_loss_sigma < 1e4):
            raise ConfigError("text.ordinal_loss_sigma", t.ordinal_loss_sigma, "expected bins >= 0 (0 = plain "
                              "cross-entropy)")
        if t.ordinal_loss_sigma > 0 and not t.ordinal_ranges:
            raise ConfigError("text.ordinal_loss_sigma", t.ordinal_loss_sigma, "smooths targets over "
                              "text.ordinal_ranges, which are not set (a tokenizer's `ordinal_ranges` gives them)")
        if not 0.0 <= t.ordinal_noise <= 1.0:
            raise ConfigError("text.ordinal_noise", t.ordinal_noise, "expected a fraction in [0, 1]")
        if t.value_feature and (not isinstance(t.value_ids, (list, tuple)) or len(t.value_ids) != 2
                                or not 0 <= int(t.value_ids[0]) < int(t.value_ids[1]) <= t.vocab_size):
            raise ConfigError("text.value_ids", t.value_ids, "text.value_feature needs the value bins' [start, stop) "
                              f"inside the vocabulary (0..{t.vocab_size}); a tokenizer's `val_ids` gives them")
        if t.rope_scaling is not None:
            kind = t.rope_scaling.get("type") if isinstance(t.rope_scaling, Mapping) else None
            if kind not in ("linear", "yarn"):
                raise ConfigError("text.rope_scaling", t.rope_scaling, "expected None or {'type': 'linear'|'yarn', "
                                  "'factor': f > 1}")
            if not float(t.rope_scaling.get("factor", 0)) >= 1.0:
                raise ConfigError("text.rope_scaling.factor", t.rope_scaling.get("factor"), "expected >= 1")
        ids = [i for i in (t.image_token_id, t.video_token_id, t.audio_token_id) if i is not None]
        for i in ids:
            if not 0 <= i < t.vocab_size:
                raise ConfigError("text.*_token_id", i,
                                  f"placeholder id outside the vocabulary (0..{t.vocab_size - 1})")
        if v.image_size % v.patch_size:
            raise ConfigError("vision.image_size", v.image_size, f"must be a multiple of patch_size={v.patch_size}")
        if v.patch_size % 4:
            raise ConfigError("vision.patch_size", v.patch_size, "must be a multiple of 4 (the stem's first stride)")
        if not 1 <= r.latents_per_frame <= 64:
            raise ConfigError("resampler.latents_per_frame", r.latents_per_frame, "expected 1..64")
        if r.mode == "pool3d" and (r.pool_frames < 1 or r.pool_hw < 1 or r.pool_hw > v.image_size // v.patch_size):
            raise ConfigError("resampler.pool_hw", r.pool_hw, "expected 1..patches per side")  # only pool3d pools
        if not 1 <= f.every_k_layers <= t.num_encoder_layers:
            raise ConfigError("fusion.every_k_layers", f.every_k_layers,
                              f"expected 1..num_encoder_layers ({t.num_encoder_layers})")
        if t.backbone and f.in_decoder:
            raise ConfigError("fusion.in_decoder", True, "gated cross-attention in a pretrained backbone's decoder "
                              "is not built; media reach its decoder through the encoder")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("_backbone_cache", None)  # built from text.backbone, not stored
        for name in SUB_CONFIGS:
            out[name] = asdict(getattr(self, name))
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim"):
            out.pop(name, None)  # derived from `text`, not stored twice
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        # Sub-configs are always written whole: a diff against defaults would hide what a preset set.
        out = super().to_diff_dict()
        out.update({name: asdict(getattr(self, name)) for name in SUB_CONFIGS})
        return out
