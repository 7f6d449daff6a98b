"""The encoder and decoder stacks and their `PreTrainedModel` base, which `unified.model.modeling` assembles into
the headless model and the LM.

    tokens + media latents (MediaEncoder) -> UnifiedEncoder (gated cross-attention before every k-th layer, and/or
    latents spliced at the placeholders; `fuse_media`, the one fusion code path) -> UnifiedDecoder (causal
    self-attention, cross-attention). On a pretrained backbone, `BackboneEncoder` puts the same media around its
    encoder.

Axis legend: B batch, L encoder length, Lt decoder length, S media latents, D d_model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from unified.errors import InputError
from unified.heads.embedding import EmbeddingHead
from unified.local_dirs import check_saved_model
from unified.model.attention import BlockDiagonal
from unified.model.backbone import MediaHooks, PositionHooks, encoder_layers
from unified.model.configuration import UnifiedConfig
from unified.model.encoders import POSITION_INIT_STD, PatchStem, TimeEmbedding
from unified.model.fusion import GatedCrossAttentionBlock
from unified.model.layers import DecoderLayer, EncoderLayer, RMSNorm, RotaryEmbedding
from unified.model.media import MediaEncoder, cross_attention_memory, latent_segments, splice_latents
from unified.model.media import media_mask as media_mask_for
from unified.model.ordinal import ordinal_rows
from unified.model.packed_backbone import packed_encoder_inputs
from unified.model.resampler import FRAME_EMBED_STD, PerceiverResampler
from unified.model.segments import segment_positions
from unified.model.value_feature import ValueFeature


@dataclass
class UnifiedEncoderOutput(BaseModelOutput):
    """The encoder's states plus what the decoder needs with them: the mask over the (possibly spliced) sequence and
    the media memory for decoder-side cross-attention."""

    attention_mask: torch.Tensor | None = None  # (B, L') after splicing
    media: torch.Tensor | None = None  # (B, S, D)
    media_keep: torch.Tensor | None = None  # (B, S) bool: real latents
    segment_ids: torch.Tensor | None = None  # (B, L') packed examples (`unified.model.segments`), 0 = padding
    media_segment_ids: torch.Tensor | None = None  # (B, S) packed: each latent's example, -1 = padding


class FusedLayer(nn.Module):
    """A gated cross-attention block in front of an existing layer; the layer keeps its own keys under `.layer`."""

    def __init__(self, layer: nn.Module, xattn: GatedCrossAttentionBlock):
        super().__init__()
        self.xattn, self.layer = xattn, layer

    def forward(self, x, *args, media=None, media_mask=None, media_active=None, **kwargs):
        if media is not None:
            x = self.xattn(x, media, media_mask, media_active)
        return self.layer(x, *args, **kwargs)


def _key_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    # (B, L) 0/1 -> bool (B, 1, 1, L), or None when nothing is padded (lets SDPA take its unmasked fast path; not
    # while compiling, where that test would be data-dependent Python)
    if attention_mask is None or (not torch.compiler.is_compiling() and bool(attention_mask.all())):
        return None
    return attention_mask.bool()[:, None, None, :]


def _is_static(cache) -> bool:
    """A preallocated (static) self-attention cache: its keys are as long as the cache, written or not."""
    return isinstance(cache, EncoderDecoderCache) and bool(getattr(cache.self_attention_cache, "is_compileable",
                                                                    False))


class AttentionRecorder:
    """While open, the given text attention modules keep the probabilities of each call (`output_attentions`; they
    then take the written-out eager path). `last()`: each module's latest (B, H, Lq, Lk), in order."""

    def __init__(self, modules, on: bool):
        self.modules = list(modules) if on else []

    def __enter__(self) -> Self:
        for module in self.modules:
            module.record = []
        return self

    def __exit__(self, *exc) -> None:
        for module in self.modules:
            module.record = None

    def last(self) -> tuple[torch.Tensor, ...] | None:
        return tuple(module.record[-1] for module in self.modules) if self.modules else None


def output_flags(config, output_attentions, output_hidden_states, return_dict) -> tuple[bool, bool, bool]:
    """(output_attentions, output_hidden_states, return_dict): each as given, or the config's when None."""
    return (bool(config.output_attentions if output_attentions is None else output_attentions),
            bool(config.output_hidden_states if output_hidden_states is None else output_hidden_states),
            bool(config.return_dict if return_dict is None else return_dict))


def _inner(layer: nn.Module) -> nn.Module:
    return layer.layer if isinstance(layer, FusedLayer) else layer


def _xattn(config: UnifiedConfig) -> GatedCrossAttentionBlock:
    t = config.text
    return GatedCrossAttentionBlock(t.d_model, t.d_model, t.num_heads, t.head_dim, gate_init=config.fusion.gate_init)


def _layer_stack(config: UnifiedConfig, layers, fused: bool) -> nn.ModuleList:
    """The layers, each k-th (`fusion.every_k_layers`) behind a gated cross-attention block when `fused`."""
    every = config.fusion.every_k_layers
    return nn.ModuleList([FusedLayer(layer, _xattn(config)) if fused and i % every == 0 else layer
                          for i, layer in enumerate(layers)])


def _value_feature(config: UnifiedConfig) -> ValueFeature | None:
    t = config.text
    return ValueFeature(t.value_ids[0], t.value_ids[1], t.d_model) if t.value_feature else None


class UnifiedPreTrainedModel(PreTrainedModel):
    config_class = UnifiedConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EncoderLayer", "DecoderLayer", "FusedLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # a local directory is checked whole first (`unified.local_dirs`): a file cut short, garbled JSON or a
        # config.json of another model type is named with what is wrong, not left to safetensors' or json's errors
        path = pretrained_model_name_or_path
        if isinstance(path, (str, Path)) and Path(path).is_dir() and not kwargs.get("subfolder"):
            check_saved_model(path, "model", model_type=cls.config_class.model_type,
                              weights="state_dict" not in kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers writes a registered conversion back to the old layout by default; ours are only for reading
        # files saved before the attention / feed-forward merge (`unified.model.legacy_keys`)
        kwargs.setdefault("save_original_format", False)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def is_custom_code(cls) -> bool:
        # transformers treats a model outside its tree as remote code whose init may write tensors in place, and then
        # skips every module whose own tensors are all marked initialised. Ours initialises through
        # `transformers.initialization` (marked per tensor) as an in-tree model does; the shortcut would skip a
        # backbone's modules that draw their children's weights (T5's attention sets q, k, v at that level), so a
        # model materialised from the meta device would differ from one built directly.
        return False

    def _init_weights(self, module):
        super()._init_weights(module)
        t = self.config.text
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and tuple(module.weight.shape) != (t.vocab_size,
                                                                                                 t.d_model):
            # Scaled by fan-in, not a fixed 0.02: at d_model 64-256 a fixed 0.02 shrinks every projection's output
            # to 0.16-0.3 of its input, so media features reach the text stream faint and the model learns to do
            # without them (measured: the media-shuffled loss equalled the real one for 1,500 steps; with this init
            # a tiny model memorises 24 clips through their media in 50 steps). The tied head keeps the embedding's.
            init.normal_(module.weight, mean=0.0, std=t.init_gain / module.weight[0].numel() ** 0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and tuple(module.weight.shape) == (t.vocab_size, t.d_model):
            # T5's scheme for tied embeddings: unit-variance rows, the head's input scaled by d_model ** -0.5
            init.normal_(module.weight, mean=0.0, std=t.embed_init_std)
            if t.ordinal_ranges:  # location / value / time bins start smooth in the bin (unified.model.ordinal)
                rows = module.weight.detach().clone()
                for start, stop in t.ordinal_ranges:
                    rows[start:stop] = ordinal_rows(stop - start, t.d_model, t.ordinal_width, t.ordinal_noise,
                                                    t.embed_init_std).to(rows)
                init.copy_(module.weight, rows)  # like the other init.* calls, skipped for weights loaded from disk
        if isinstance(module, RMSNorm):
            init.ones_(module.weight)
        if isinstance(module, ValueFeature):  # W starts at 0: the feature adds nothing until it is learnt
            init.zeros_(module.weight)
        if isinstance(module, GatedCrossAttentionBlock):
            init.constant_(module.attn_gate, module.gate_init)
            init.constant_(module.ff_gate, module.gate_init)
        # Our own parameters outside any Linear / Embedding: drawn here too, or a model materialised from the meta
        # device (from_pretrained with a key missing) keeps whatever memory held there (transformers'
        # test_can_init_all_missing_weights)
        if isinstance(module, PatchStem):
            init.normal_(module.row_embed, mean=0.0, std=POSITION_INIT_STD)
            init.normal_(module.col_embed, mean=0.0, std=POSITION_INIT_STD)
        if isinstance(module, PerceiverResampler):
            init.normal_(module.latents, mean=0.0, std=module.latent_std)
            if module.frame_embed is not None:
                init.normal_(module.frame_embed, mean=0.0, std=FRAME_EMBED_STD)
        if isinstance(module, EmbeddingHead):
            init.constant_(module.log_scale, module.init_log_scale)
        # Non-persistent buffers are not in the checkpoint: recompute them (a model built on the meta device has none).
        if isinstance(module, RotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq())
            module._cos = module._sin = None
        if isinstance(module, TimeEmbedding):
            init.copy_(module.omega, module.compute_omega())


class UnifiedEncoder(UnifiedPreTrainedModel):
    """Token embeddings + media, then pre-norm layers; gated cross-attention before every k-th layer (xattn)."""

    def __init__(self, config: UnifiedConfig):
        super().__init__(config)
        t, f = config.text, config.fusion
        # its own module, its weight tied to `shared` by `_tied_weights_keys` (T5's way): one module held twice
        # would hide a checkpoint's missing embedding from transformers' load report and leave it on the meta device
        self.embed_tokens = nn.Embedding(t.vocab_size, t.d_model)
        self.media = MediaEncoder(config)
        self.value_feature = _value_feature(config)
        impl = config._attn_implementation or "sdpa"
        self.layers = _layer_stack(config, [EncoderLayer(t, attn_implementation=impl)
                                            for _ in range(t.num_encoder_layers)], f.mode in ("xattn", "both"))
        self.norm = RMSNorm(t.d_model, t.norm_eps)
        self.rotary = RotaryEmbedding(t)
        self.dropout = nn.Dropout(t.dropout)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, pixel_mask=None, frame_times=None,
                frame_time_ids=None, audio_features=None, audio_mask=None, inputs_embeds=None,
                output_hidden_states=None, return_dict=None, segment_ids=None, output_attentions=None,
                **kwargs) -> UnifiedEncoderOutput:
        output_attentions, output_hidden_states, return_dict = output_flags(self.config, output_attentions,
                                                                            output_hidden_states, return_dict)
        with AttentionRecorder((_inner(layer).self_attn for layer in self.layers), output_attentions) as recorder:
            out = self._encode(input_ids, attention_mask, pixel_values, pixel_mask, frame_times, frame_time_ids,
                               audio_features, audio_mask, inputs_embeds, output_hidden_states, segment_ids)
            out.attentions = recorder.last()
        return out if return_dict else out.to_tuple()

    def _encode(self, input_ids, attention_mask, pixel_values, pixel_mask, frame_times, frame_time_ids,
                audio_features, audio_mask, inputs_embeds, output_hidden_states, segment_ids) -> UnifiedEncoderOutput:
        fused = fuse_media(self.config, self.media, self.embed_tokens, input_ids, attention_mask, inputs_embeds,
                           pixel_values, pixel_mask, frame_times, frame_time_ids, audio_features, audio_mask,
                           segment_ids, self.value_feature)
        embeds, attention_mask, xattn_media, xattn_mask = fused.embeds, fused.mask, fused.media, fused.media_mask
        x = self.dropout(embeds)
        positions = torch.arange(x.shape[1], device=x.device)
        rotary = self.rotary(positions, x.dtype)
        segments = fused.segments  # packed examples: block-diagonal attention (`unified.model.segments`)
        mask = _key_mask(attention_mask) if segments is None else BlockDiagonal(segments, segments)
        hidden = [x] if output_hidden_states else None
        for layer in self.layers:
            if isinstance(layer, FusedLayer):
                x = layer(x, mask, rotary, media=xattn_media, media_mask=xattn_mask, media_active=fused.media_active)
            else:
                x = layer(x, mask, rotary)
            if output_hidden_states:
                hidden.append(x)
        x = self.norm(x)
        return UnifiedEncoderOutput(last_hidden_state=x, hidden_states=tuple(hidden) if hidden else None,
                                    attention_mask=attention_mask, media=fused.decoder_media,
                                    media_keep=fused.decoder_keep, segment_ids=segments,
                                    media_segment_ids=fused.decoder_segments)


@dataclass
class FusedInputs:
    """What the encoder's layers consume once media are fused in (shared by our backbone and a pretrained one)."""

    embeds: torch.Tensor  # (B, L', D): token embeddings, latents spliced at the placeholders ("concat")
    mask: torch.Tensor  # (B, L')
    media: torch.Tensor | None  # (B, S, D) memory for gated cross-attention ("xattn"), else None
    media_mask: torch.Tensor | None  # (B, L', S) which latents each position may attend to
    decoder_media: torch.Tensor | None  # (B, S, D) for the decoder's gated cross-attention (`in_decoder`)
    decoder_keep: torch.Tensor | None  # (B, S) real latents
    segments: torch.Tensor | None = None  # (B, L') packed examples' ids over the fused sequence, 0 = padding
    decoder_segments: torch.Tensor | None = None  # (B, S) packed: the example of each decoder_media latent
    media_active: torch.Tensor | None = None  # (B, L') packed: positions whose example has media (gated blocks act)


def fuse_media(config, media_encoder, embed_tokens, input_ids, attention_mask, inputs_embeds, pixel_values,
               pixel_mask, frame_times, frame_time_ids, audio_features, audio_mask, segment_ids=None,
               value_feature=None) -> FusedInputs:
    """Embed the tokens, encode the media and fuse them as `config.fusion.mode` says (the one fusion code path).
    `segment_ids` (B, L): packed examples; the latents spliced at a placeholder take its example's id.
    `value_feature` (`ValueFeature` or None): adds each value token's value feature to its embedding."""
    embeds = embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, D)
    if value_feature is not None and inputs_embeds is None:
        embeds = value_feature(input_ids, embeds)
    if attention_mask is None:
        attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    if input_ids is None:  # soft prompts / prompt tuning: embeddings given directly, so no placeholders to fill
        if pixel_values is not None or audio_features is not None:
            raise InputError("input_ids", None, "media need input_ids: their placeholder tokens say where each item "
                             "goes, and inputs_embeds alone carry none")
        return FusedInputs(embeds, attention_mask, None, None, None, None, segment_ids)
    # the processor writes float32 media; a model loaded in bf16 / fp16 takes them in its own dtype
    pixel_values, audio_features = (_in_dtype(x, embeds.dtype) for x in (pixel_values, audio_features))
    latents = media_encoder(pixel_values, pixel_mask, frame_times, audio_features, audio_mask)
    mode = config.fusion.mode
    media, latent_group, token_group = cross_attention_memory(input_ids, latents, config)  # (B, S, D)
    segments = segment_ids
    if mode in ("concat", "both") and media is not None:
        # the tracks the spliced sequence needs: Flamingo's groups ("both") and packed rows' segment ids
        tracks = [t for t, used in ((token_group, mode == "both" or segment_ids is None), (segment_ids, True))
                  if used and t is not None]
        embeds, attention_mask, spliced = splice_latents(
            embeds, attention_mask, input_ids, latents, frame_time_ids, embed_tokens, config,
            torch.stack(tracks, dim=-1))  # (B, L', D), (B, L'), (B, L', C)
        if mode == "both" or segment_ids is None:
            token_group = spliced[..., 0]
        if segment_ids is not None:
            segments = spliced[..., -1].clamp_min(0)
    xattn_media = media if mode in ("xattn", "both") else None
    xattn_mask = media_mask_for(token_group, latent_group, config) if xattn_media is not None else None
    own = active = None  # packed: the example of each latent; a token sees only its own example's media
    if segment_ids is not None and media is not None and (xattn_media is not None or config.fusion.in_decoder):
        own = latent_segments(input_ids, latents, config, segment_ids)  # (B, S)
        same = segments[:, :, None] == own[:, None, :]  # (B, L', S) over the spliced sequence ("both")
        active = same.any(-1)  # (B, L'): an example alone without media skips the gated blocks
        if xattn_mask is not None:
            xattn_mask = xattn_mask & same
    decoder_media = media if config.fusion.in_decoder else None
    keep = latent_group >= 0 if decoder_media is not None else None  # (B, S)
    return FusedInputs(embeds, attention_mask, xattn_media, xattn_mask, decoder_media, keep, segments,
                       own if decoder_media is not None else None, active)


class BackboneEncoder(nn.Module):
    """The media stack and gated cross-attention blocks around a pretrained encoder-decoder's encoder.

    The backbone itself (`UnifiedForConditionalGeneration.lm`) is not a submodule here: its weights keep their own
    names under `lm.`. Same inputs and output as `UnifiedEncoder`."""

    main_input_name = "input_ids"

    def __init__(self, config: UnifiedConfig, lm: nn.Module):
        super().__init__()

        f = config.fusion
        self.config = config
        self._lm = [lm]  # a plain list: not registered, so not saved twice
        self.media = MediaEncoder(config)
        self.value_feature = _value_feature(config)
        layers = encoder_layers(lm)
        fused = [i for i in range(len(layers)) if f.mode in ("xattn", "both") and i % f.every_k_layers == 0]
        self.xattn = nn.ModuleDict({str(i): _xattn(config) for i in fused})  # keys: the backbone layer index
        self.hooks = MediaHooks(layers, {i: self.xattn[str(i)] for i in fused})
        embeds = [getattr(part, "embed_positions", None) for part in (lm.get_encoder(), lm.get_decoder())]
        learned = lm.config.model_type == "bart" and all(e is not None for e in embeds)
        self.positions = PositionHooks(embeds) if learned else None  # packed: restarted per example

    @property
    def lm(self) -> nn.Module:
        return self._lm[0]

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, pixel_mask=None, frame_times=None,
                frame_time_ids=None, audio_features=None, audio_mask=None, inputs_embeds=None,
                output_hidden_states=None, return_dict=None, output_attentions=None, **kwargs) -> UnifiedEncoderOutput:
        output_attentions, output_hidden_states, return_dict = output_flags(self.config, output_attentions,
                                                                            output_hidden_states, return_dict)
        segment_ids = kwargs.get("segment_ids")
        encoder = self.lm.get_encoder()
        fused = fuse_media(self.config, self.media, encoder.get_input_embeddings(), input_ids, attention_mask,
                           inputs_embeds, pixel_values, pixel_mask, frame_times, frame_time_ids, audio_features,
                           audio_mask, segment_ids, value_feature=self.value_feature)
        self.hooks.set(fused.media, fused.media_mask, fused.media_active)
        masks = {"attention_mask": fused.mask}
        if fused.segments is not None:  # packed: block-diagonal masks, positions restarted (`packed_backbone`)
            masks = packed_encoder_inputs(self.lm, fused.segments, fused.embeds.dtype)
        with restarted_positions(self.positions, fused.segments):
            out = encoder(inputs_embeds=fused.embeds, return_dict=True, output_hidden_states=bool(output_hidden_states),
                          output_attentions=bool(output_attentions), **masks)
        out = UnifiedEncoderOutput(last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states,
                                   attentions=out.attentions, attention_mask=fused.mask, media=None, media_keep=None,
                                   segment_ids=fused.segments)
        return out if return_dict else out.to_tuple()


@contextlib.contextmanager
def restarted_positions(hooks: PositionHooks | None, segments: torch.Tensor | None):
    """While open, a learned-position backbone (BART) numbers each packed example's positions from 0."""
    if hooks is None or segments is None:
        yield
        return
    hooks.positions = segment_positions(segments)
    try:
        yield
    finally:
        hooks.positions = None


class UnifiedDecoder(nn.Module):
    """Causal pre-norm decoder with cross-attention (and optional gated media cross-attention)."""

    def __init__(self, config: UnifiedConfig):
        super().__init__()
        t, f = config.text, config.fusion
        self.embed_tokens = nn.Embedding(t.vocab_size, t.d_model)  # tied to `shared` (see UnifiedEncoder)
        impl = config._attn_implementation or "sdpa"
        self.layers = _layer_stack(config, [DecoderLayer(t, i, attn_implementation=impl)
                                            for i in range(t.num_decoder_layers)], f.in_decoder)
        self.norm = RMSNorm(t.d_model, t.norm_eps)
        self.rotary = RotaryEmbedding(t)
        self.dropout = nn.Dropout(t.dropout)

    def forward(self, input_ids, encoder_states, encoder_mask, attention_mask=None, past_key_values=None,
                media=None, media_keep=None, output_hidden_states=False, segment_ids=None, encoder_segment_ids=None,
                inputs_embeds=None, media_segment_ids=None):
        x = self.dropout(self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds)  # (B, Lt, D)
        # tokens already cached: an int (dynamic cache) or a 0-d tensor (static cache; kept a tensor, so a compiled
        # decoding step has no data-dependent Python)
        start = past_key_values.get_seq_length() if past_key_values is not None else 0
        positions = torch.arange(x.shape[1], device=x.device) + start  # (Lt,)
        rotary = self.rotary(positions, x.dtype)
        causal = True
        if attention_mask is not None and attention_mask.dim() == 4:
            # transformers' prepared mask (B, 1, Lt, Lk), bool or additive; generate passes one with a static cache
            self_mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
            causal = False  # it holds the causal order (transformers' convention for a 4-D mask)
        elif _is_static(past_key_values):
            # preallocated keys: query i (at start + i) sees the slots up to its own position, never unwritten ones
            slots = torch.arange(past_key_values.self_attention_cache.get_max_length(), device=x.device)
            self_mask = (slots[None, :] <= positions[:, None])[None, None]  # (1, 1, Lt, Lmax)
            if attention_mask is not None:  # (B, written so far): padding, with the unwritten slots closed
                keep = F.pad(attention_mask.bool(), (0, slots.shape[0] - attention_mask.shape[-1]))
                self_mask = self_mask & keep[:, None, None, :]
            causal = False
        else:
            self_mask = _key_mask(attention_mask)
            if self_mask is not None and self_mask.shape[-1] != start + x.shape[1]:
                self_mask = None  # a mask for the new tokens only: causal order already covers them
        cross_mask = _key_mask(encoder_mask)
        if segment_ids is not None:  # packed examples: each sees its own targets and its own encoder positions
            self_mask = BlockDiagonal(segment_ids, segment_ids)
            cross_mask = BlockDiagonal(segment_ids, encoder_segment_ids)
        media_mask = media_active = None
        if media is not None and media_keep is not None:
            media_mask = media_keep[:, None, :].expand(-1, x.shape[1], -1)  # (B, Lt, S): every real latent
            if segment_ids is not None and media_segment_ids is not None:  # packed: its own example's latents
                media_mask = media_mask & (segment_ids[:, :, None] == media_segment_ids[:, None, :])
                media_active = media_mask.any(-1)  # (B, Lt): examples without media skip the gated blocks
        hidden = [x] if output_hidden_states else None
        for layer in self.layers:
            args = (x, self_mask, rotary, encoder_states, cross_mask)
            if isinstance(layer, FusedLayer):
                x = layer(*args, past_key_values=past_key_values, causal=causal, media=media, media_mask=media_mask,
                          media_active=media_active)
            else:
                x = layer(*args, past_key_values=past_key_values, causal=causal)
            if output_hidden_states:
                hidden.append(x)
        return self.norm(x), hidden


def _in_dtype(x: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return x.to(dtype) if x is not None and x.is_floating_point() and x.dtype != dtype else x
