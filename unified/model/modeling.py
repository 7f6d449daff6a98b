"""`UnifiedForConditionalGeneration` (the LM, `AutoModelForSeq2SeqLM`) and `UnifiedBaseModel` (headless,
`AutoModel`): the encoder-decoder, native to transformers. The stacks themselves are in `unified.model.stacks`.

    inputs -> tokens + media latents (MediaEncoder) -> encoder (gated cross-attention before every k-th layer,
    and/or latents spliced at the placeholders) -> decoder (causal self-attention, cross-attention) -> tied LM head

Axis legend: B batch, L encoder length, Lt decoder length, S media latents, D d_model, V vocabulary.

    >>> model = UnifiedForConditionalGeneration(UnifiedConfig.preset("tiny"))
    >>> out = model(input_ids=ids, attention_mask=mask, labels=labels)      # Seq2SeqLMOutput with .loss
    >>> model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8)
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput

from unified.errors import ConfigError, InputError
from unified.heads.embedding import EmbeddingHead
from unified.model.attention import ATTENTION_FUNCTIONS
from unified.model.backbone import build_lm, copy_lm_weights
from unified.model.configuration import UnifiedConfig
from unified.model.layers import Attention
from unified.model.ordinal import token_cross_entropy
from unified.model.packed_backbone import decoder_start, packed_decoder_inputs
from unified.model.segments import shift_right_segments
from unified.model.stacks import (
    AttentionRecorder,
    BackboneEncoder,
    UnifiedDecoder,
    UnifiedEncoder,
    UnifiedEncoderOutput,
    UnifiedPreTrainedModel,
    _inner,
    output_flags,
    restarted_positions,
)

DEFAULT_MAX_NEW_TOKENS = 32  # generate()'s default answer length (a task's grammar sets its own)


class EncoderDecoderStack:
    """What the headless model and the LM share: the stack (ours: `shared`, `encoder`, `decoder`; or a pretrained
    backbone kept whole under `lm.` with our media around its encoder) and the transformers plumbing around it.
    Both models hold it at the top level, T5's layout, so a checkpoint of either loads into the other."""

    def _build_stack(self, config: UnifiedConfig) -> None:
        t = config.text
        if t.backbone:  # a pretrained encoder-decoder (unified.model.backbone), kept whole under `lm.`

            self.lm = build_lm(t.backbone, t.vocab_size, config._attn_implementation)
            self.encoder = BackboneEncoder(config, self.lm)
            self.generation_config = copy.deepcopy(self.lm.generation_config)  # BART's forced eos, for instance
            self._tied_weights_keys = {}  # the backbone ties (or not) its own embeddings
        else:
            self.lm = None
            self.shared = nn.Embedding(t.vocab_size, t.d_model)
            self.encoder = UnifiedEncoder(config)
            self.decoder = UnifiedDecoder(config)

    def _use_attn_implementation(self) -> None:
        impl = self.config._attn_implementation
        impl = impl if impl in ATTENTION_FUNCTIONS else "sdpa"
        for module in self.modules():  # every attention of ours: text layers, gated cross-attention, perceiver
            if isinstance(module, Attention):
                module.attn_implementation = impl

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        # transformers drops every tie when `tie_word_embeddings` is False; ours always share one input embedding
        # (encoder, decoder, `shared`), and the flag decides the LM head alone. A backbone ties its own.
        if self.lm is not None:
            return {}
        tied = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}
        if self.config.tie_word_embeddings and getattr(self, "lm_head", None) is not None:
            tied["lm_head.weight"] = "shared.weight"
        return tied

    @classmethod
    def from_pretrained_parts(cls, config: UnifiedConfig):
        """A new model whose pretrained parts (each sub-config with a `pretrained_path`) start from those local
        checkpoints' weights; everything else is freshly initialised. Save it with `save_pretrained`: the saved
        model holds every weight and every backbone's config, so it loads where those directories do not exist."""
        model = cls(config)
        model.load_pretrained_parts()
        return model

    def load_pretrained_parts(self) -> list[str]:
        """Copy the weights of every configured `pretrained_path` into its part; returns the fields it read."""
        read = []
        t = self.config.text
        if t.pretrained_path and self.lm is not None:
            copy_lm_weights(self.lm, t.pretrained_path, t.ordinal_ranges, t.ordinal_width, t.ordinal_noise)
            read.append("text.pretrained_path")
        media = self.encoder.media
        for field, part, encoder in (("vision", self.config.vision, media.vision),
                                     ("audio", self.config.audio, media.audio)):
            if part.pretrained_path:
                encoder.load_backbone_weights(part.pretrained_path)
                read.append(f"{field}.pretrained_path")
        return read

    def get_input_embeddings(self):
        return self.shared if self.lm is None else self.lm.get_input_embeddings()

    def set_input_embeddings(self, value):
        if self.lm is not None:
            self.lm.set_input_embeddings(value)
            return
        self.shared = value
        self.encoder.embed_tokens = value
        self.decoder.embed_tokens = value

    def get_encoder(self, modality=None):
        return self.encoder

    def set_attn_implementation(self, attn_implementation):
        """Switch every attention layer ("eager", "sdpa", "xformers")."""
        name = attn_implementation if isinstance(attn_implementation, str) else attn_implementation.get("", "sdpa")
        if name not in ATTENTION_FUNCTIONS:
            raise ConfigError("attn_implementation", name, f'Specified `attn_implementation="{name}"` is not '
                              f"supported: expected one of {sorted(ATTENTION_FUNCTIONS)}")
        self.config._attn_implementation = name
        if self.lm is not None:
            self.lm.set_attn_implementation(name)
        for module in self.modules():
            if hasattr(module, "attn_implementation"):
                module.attn_implementation = name

    def _run_encoder(self, encoder_outputs, output_attentions, output_hidden_states, **inputs) -> UnifiedEncoderOutput:
        if encoder_outputs is None:
            return self.encoder(**inputs, output_hidden_states=output_hidden_states,
                                output_attentions=output_attentions, return_dict=True)
        if isinstance(encoder_outputs, UnifiedEncoderOutput):
            return encoder_outputs
        if isinstance(encoder_outputs, BaseModelOutput):  # by name: a tuple view drops the fields that are None
            return UnifiedEncoderOutput(last_hidden_state=encoder_outputs.last_hidden_state,
                                        hidden_states=encoder_outputs.hidden_states,
                                        attentions=encoder_outputs.attentions)
        return UnifiedEncoderOutput(*tuple(encoder_outputs)[:3])  # a tuple, transformers' order

    def _decoder_states(self, encoder_outputs, encoder_mask, decoder_input_ids, decoder_attention_mask,
                        decoder_inputs_embeds, past_key_values, use_cache, output_hidden_states, output_attentions,
                        decoder_segment_ids=None):
        """Our decoder over the encoder's output -> (states (B, Lt, D) after the final norm, hidden states or None,
        the cache or None, self-attentions, cross-attentions)."""
        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        if not use_cache:
            past_key_values = None
        layers = [_inner(layer) for layer in self.decoder.layers]
        with AttentionRecorder((m.self_attn for m in layers), output_attentions) as own, \
                AttentionRecorder((m.cross_attn for m in layers), output_attentions) as cross:
            states, hidden = self.decoder(decoder_input_ids, encoder_outputs.last_hidden_state, encoder_mask,
                                          attention_mask=decoder_attention_mask, past_key_values=past_key_values,
                                          media=encoder_outputs.media, media_keep=encoder_outputs.media_keep,
                                          output_hidden_states=output_hidden_states,
                                          segment_ids=decoder_segment_ids,
                                          encoder_segment_ids=encoder_outputs.segment_ids,
                                          inputs_embeds=decoder_inputs_embeds,
                                          media_segment_ids=encoder_outputs.media_segment_ids)
            return states, (tuple(hidden) if hidden else None), past_key_values, own.last(), cross.last()


class UnifiedBaseModel(EncoderDecoderStack, UnifiedPreTrainedModel):
    """The headless encoder-decoder (what `AutoModel` loads): media fused into the encoder, then the decoder;
    `forward` returns `Seq2SeqModelOutput` with the decoder's last hidden states (B, Lt, D), no LM head. Its keys are
    the LM's without `lm_head` / `embed_head`, so `UnifiedBaseModel.from_pretrained(lm_dir)` reads a trained model's
    stack (the heads are reported unexpected)."""

    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight",
                          "decoder.embed_tokens.weight": "shared.weight"}

    def __init__(self, config: UnifiedConfig):
        super().__init__(config)
        self._build_stack(config)
        self._use_attn_implementation()
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, pixel_mask=None, frame_times=None,
                frame_time_ids=None, audio_features=None, audio_mask=None, decoder_input_ids=None,
                decoder_attention_mask=None, encoder_outputs=None, past_key_values=None, use_cache=None,
                inputs_embeds=None, decoder_inputs_embeds=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, cache=None) -> Seq2SeqModelOutput:
        past_key_values = _cache_arg(cache, past_key_values)
        if (decoder_input_ids is None) == (decoder_inputs_embeds is None):
            raise InputError("decoder_input_ids", None if decoder_input_ids is None else "given with embeds",
                             "the headless model needs exactly one of decoder_input_ids / decoder_inputs_embeds "
                             "(it has no labels to shift)")
        output_attentions, output_hidden_states, return_dict = output_flags(self.config, output_attentions,
                                                                            output_hidden_states, return_dict)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        encoder_outputs = self._run_encoder(encoder_outputs, output_attentions, output_hidden_states,
                                            input_ids=input_ids, attention_mask=attention_mask,
                                            pixel_values=pixel_values, pixel_mask=pixel_mask,
                                            frame_times=frame_times, frame_time_ids=frame_time_ids,
                                            audio_features=audio_features, audio_mask=audio_mask,
                                            inputs_embeds=inputs_embeds)
        mask = encoder_outputs.attention_mask if encoder_outputs.attention_mask is not None else attention_mask
        if self.lm is None:
            states, hidden, cache, own, cross = self._decoder_states(
                encoder_outputs, mask, decoder_input_ids, decoder_attention_mask, decoder_inputs_embeds,
                past_key_values, use_cache, output_hidden_states, output_attentions)
        else:  # the backbone's own decoder (every supported family takes these names)
            out = self.lm.get_decoder()(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                                        encoder_hidden_states=encoder_outputs.last_hidden_state,
                                        encoder_attention_mask=mask, inputs_embeds=decoder_inputs_embeds,
                                        cache=past_key_values, use_cache=use_cache, return_dict=True,
                                        output_attentions=output_attentions,
                                        output_hidden_states=output_hidden_states)
            states, hidden, cache = out.last_hidden_state, out.hidden_states, out.cache
            own, cross = out.attentions, out.cross_attentions
        out = Seq2SeqModelOutput(last_hidden_state=states, cache=cache, decoder_hidden_states=hidden,
                                 decoder_attentions=own, cross_attentions=cross,
                                 encoder_last_hidden_state=encoder_outputs.last_hidden_state,
                                 encoder_hidden_states=encoder_outputs.hidden_states,
                                 encoder_attentions=encoder_outputs.attentions)
        return out if return_dict else out.to_tuple()


class UnifiedForConditionalGeneration(EncoderDecoderStack, UnifiedPreTrainedModel, GenerationMixin):
    """The whole model: `forward` returns `Seq2SeqLMOutput`; `generate` does greedy, beam and sampling with a KV cache;
    media are encoded once per `generate` call (they live in the encoder pass)."""

    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight",
                          "decoder.embed_tokens.weight": "shared.weight",
                          "lm_head.weight": "shared.weight"}

    def __init__(self, config: UnifiedConfig):
        super().__init__(config)
        t = config.text
        self._build_stack(config)
        if self.lm is None:
            self.lm_head = nn.Linear(t.d_model, t.vocab_size, bias=False)
        self.embed_head = EmbeddingHead(t.d_model, t.embed_dim, learn_temperature=True)
        if self.generation_config is not None and self.generation_config.max_new_tokens is None:
            self.generation_config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS  # not transformers' max_length=20
        self._use_attn_implementation()
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head if self.lm is None else self.lm.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        if self.lm is None:
            self.lm_head = new_embeddings
        else:
            self.lm.set_output_embeddings(new_embeddings)

    def embed(self, input_ids=None, attention_mask=None, **media) -> torch.Tensor:
        """Inputs (text and/or media, as the processor gives them) -> (B, embed_dim) unit vectors: the encoder's
        states mean-pooled over real positions through the embedding head. `labels` are ignored."""
        media.pop("labels", None)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **media)
        mask = out.attention_mask if out.attention_mask is not None else attention_mask
        return self.embed_head(out.last_hidden_state, mask).embeddings

    def _shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        start = self.config.text.decoder_start_token_id
        shifted = labels.new_full(labels.shape, start)
        shifted[:, 1:] = labels[:, :-1]
        return shifted.masked_fill(shifted == -100, self.config.text.pad_token_id)

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, pixel_mask=None, frame_times=None,
                frame_time_ids=None, audio_features=None, audio_mask=None, decoder_input_ids=None,
                decoder_attention_mask=None, labels=None, encoder_outputs=None, past_key_values=None,
                use_cache=None, inputs_embeds=None, decoder_inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, return_embeddings=False, cache=None, segment_ids=None,
                decoder_segment_ids=None, logits_to_keep=0, loss_reduction="mean", **kwargs):
        """transformers' seq2seq forward, media included. `output_attentions` / `output_hidden_states` /
        `return_dict` / `use_cache` default to the config's (`use_cache` only without `labels`: training keeps no
        cache); `logits_to_keep` (int: the last n positions, 0 = all; or a 1-D index tensor) limits the head's
        work. `return_embeddings=True` returns the retrieval embedding instead (`embed`). `loss_reduction`: "mean"
        (the loss over the real target tokens) or "none" (`loss` is each target token's (B, Lt), 0 on padding, for
        a caller that weighs tokens itself: a mixed batch's per-task weights; its cross-entropy is then computed
        once, here)."""
        past_key_values = _cache_arg(cache, past_key_values)
        unknown = sorted(k for k, v in kwargs.items() if v is not None)
        if unknown:  # refused, never dropped (generate's own bookkeeping arrives as None)
            raise InputError(unknown[0], type(kwargs[unknown[0]]).__name__, "not an input of this model")
        if labels is not None and not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
            raise InputError("logits_to_keep", logits_to_keep if isinstance(logits_to_keep, int) else "a tensor",
                             "the loss over `labels` needs every position's logits: leave logits_to_keep at 0")
        if loss_reduction not in ("mean", "none"):
            raise InputError("loss_reduction", loss_reduction, "expected 'mean' or 'none'")
        if decoder_input_ids is not None and decoder_inputs_embeds is not None:
            raise InputError("decoder_inputs_embeds", tuple(decoder_inputs_embeds.shape), "give decoder_input_ids "
                             "or decoder_inputs_embeds, not both")
        output_attentions, output_hidden_states, return_dict = output_flags(self.config, output_attentions,
                                                                            output_hidden_states, return_dict)
        given_cache = use_cache  # a backbone applies its own default (T5Gemma's masks differ with and without)
        if use_cache is None:
            use_cache = self.config.use_cache and labels is None
        if (segment_ids is None) != (decoder_segment_ids is None) or (segment_ids is not None and (
                return_embeddings or labels is None or decoder_input_ids is not None)):
            raise InputError("segment_ids", "packed examples", "packing takes segment_ids with decoder_segment_ids "
                             "and labels (training), not embeddings or given decoder inputs (`unified.model.segments`)")
        if return_embeddings:  # the embedding head (retrieval), through forward so DDP/accelerate wrappers see it
            return self.embed(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                              pixel_mask=pixel_mask, frame_times=frame_times, frame_time_ids=frame_time_ids,
                              audio_features=audio_features, audio_mask=audio_mask)
        encoder_outputs = self._run_encoder(encoder_outputs, output_attentions, output_hidden_states,
                                            input_ids=input_ids, attention_mask=attention_mask,
                                            pixel_values=pixel_values, pixel_mask=pixel_mask,
                                            frame_times=frame_times, frame_time_ids=frame_time_ids,
                                            audio_features=audio_features, audio_mask=audio_mask,
                                            inputs_embeds=inputs_embeds, segment_ids=segment_ids)
        encoder_mask = encoder_outputs.attention_mask
        if encoder_mask is None:
            encoder_mask = attention_mask
        if self.lm is not None:
            out = self._backbone_decode(encoder_outputs, encoder_mask, decoder_input_ids, decoder_attention_mask,
                                        decoder_inputs_embeds, labels, past_key_values, given_cache,
                                        output_hidden_states, output_attentions, logits_to_keep, decoder_segment_ids,
                                        loss_reduction)
        else:
            out = self._decode(encoder_outputs, encoder_mask, decoder_input_ids, decoder_attention_mask,
                               decoder_inputs_embeds, decoder_segment_ids, labels, past_key_values, use_cache,
                               output_hidden_states, output_attentions, logits_to_keep, loss_reduction)
        return out if return_dict else out.to_tuple()

    def _decode(self, encoder_outputs, encoder_mask, decoder_input_ids, decoder_attention_mask,
                decoder_inputs_embeds, decoder_segment_ids, labels, past_key_values, use_cache,
                output_hidden_states, output_attentions, logits_to_keep, loss_reduction="mean") -> Seq2SeqLMOutput:
        t = self.config.text
        if decoder_segment_ids is not None:
            decoder_input_ids = shift_right_segments(labels, decoder_segment_ids, t.decoder_start_token_id,
                                                     t.pad_token_id)
        elif labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(labels)
        states, hidden, past_key_values, decoder_attentions, cross_attentions = self._decoder_states(
            encoder_outputs, encoder_mask, decoder_input_ids, decoder_attention_mask, decoder_inputs_embeds,
            past_key_values, use_cache, output_hidden_states, output_attentions, decoder_segment_ids)
        if self.config.tie_word_embeddings:
            # T5's rule for a tied head: scale by d_model ** -0.5, or the output side's large gradients swamp the
            # input embeddings and the encoder stops telling tokens apart
            states = states * t.d_model ** -0.5
        logits = self.lm_head(_keep(states, logits_to_keep))  # (B, Lt or kept, V)
        loss = None
        if labels is not None:  # cross-entropy; HL-Gauss over the ordered bins when text.ordinal_loss_sigma > 0
            loss = token_cross_entropy(logits, labels, t.ordinal_ranges, t.ordinal_loss_sigma, loss_reduction)
        return Seq2SeqLMOutput(loss=loss, logits=logits, cache=past_key_values,
                               decoder_hidden_states=hidden, decoder_attentions=decoder_attentions,
                               cross_attentions=cross_attentions,
                               encoder_last_hidden_state=encoder_outputs.last_hidden_state,
                               encoder_hidden_states=encoder_outputs.hidden_states,
                               encoder_attentions=encoder_outputs.attentions)

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, cache=None,
                                      is_first_iteration=False, **kwargs):
        # Continuing from the cache a first `generate` returned, with its `sequences` as decoder_input_ids: the
        # cached tokens are already in the cache, so only the rest is fed. transformers tells the two apart by a
        # decoder_attention_mask as long as the sequence; without one it fed the whole sequence again after the
        # cache, at the wrong positions (T5 does the same). What generate returns holds every token, so a longer
        # decoder_input_ids than the cache is taken as that whole sequence.
        past = cache.get_seq_length() if cache is not None else 0
        if (is_first_iteration and next_sequence_length is None and isinstance(past, int) and 0 < past
                < input_ids.shape[1]):
            next_sequence_length = input_ids.shape[1] - past
        return super().prepare_inputs_for_generation(input_ids, next_sequence_length=next_sequence_length,
                                                     cache=cache, is_first_iteration=is_first_iteration, **kwargs)

    def _prepare_cache_for_generation(self, *args, **kwargs):
        # The backbone knows its caches (T5Gemma: sliding self-attention, full cross-attention)
        if self.lm is not None:
            return self.lm._prepare_cache_for_generation(*args, **kwargs)
        return super()._prepare_cache_for_generation(*args, **kwargs)

    def _backbone_decode(self, encoder_outputs, mask, decoder_input_ids, decoder_attention_mask,
                         decoder_inputs_embeds, labels, past_key_values, use_cache, output_hidden_states,
                         output_attentions, logits_to_keep, decoder_segment_ids=None,
                         loss_reduction="mean") -> Seq2SeqLMOutput:
        # After our encoder pass (media fused): the backbone's decoder, head, cache and loss exactly as its own.
        states = BaseModelOutput(last_hidden_state=encoder_outputs.last_hidden_state,
                                 hidden_states=encoder_outputs.hidden_states)
        extra = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}  # not every family's forward has it
        t = self.config.text
        # the loss computed here, not by the backbone (which would compute its mean cross-entropy for nothing):
        # per-token losses asked for, or HL-Gauss over the ordered bins
        own_loss = labels is not None and (loss_reduction == "none" or t.ordinal_loss_sigma > 0)
        if decoder_segment_ids is not None:  # packed: inputs restarted per example, block-diagonal 4-D masks
            dtype = encoder_outputs.last_hidden_state.dtype
            decoder_input_ids = shift_right_segments(labels, decoder_segment_ids, *decoder_start(self.lm))
            extra.update(packed_decoder_inputs(self.lm, decoder_segment_ids, encoder_outputs.segment_ids, dtype))
            mask, decoder_attention_mask = extra.pop("attention_mask"), extra.pop("decoder_attention_mask")
            use_cache = False  # what stays in `extra`: RoPE families' decoder_position_ids
        elif own_loss and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self.lm.prepare_decoder_input_ids_from_labels(labels)  # the family's own shift
        if own_loss and use_cache is None:
            use_cache = False  # as with labels: training keeps no cache (BART's own rule; T5's would build one)
        with restarted_positions(self.encoder.positions, decoder_segment_ids):
            out = self.lm(attention_mask=mask, encoder_outputs=states, decoder_input_ids=decoder_input_ids,
                          decoder_attention_mask=decoder_attention_mask, decoder_inputs_embeds=decoder_inputs_embeds,
                          labels=None if own_loss else labels, cache=past_key_values, use_cache=use_cache,
                          return_dict=True, output_hidden_states=bool(output_hidden_states),
                          output_attentions=bool(output_attentions), **extra)
        loss = out.loss
        if own_loss:
            loss = token_cross_entropy(out.logits, labels, t.ordinal_ranges, t.ordinal_loss_sigma, loss_reduction)
        return Seq2SeqLMOutput(loss=loss, logits=out.logits, cache=out.cache,
                               decoder_hidden_states=out.decoder_hidden_states,
                               decoder_attentions=out.decoder_attentions, cross_attentions=out.cross_attentions,
                               encoder_last_hidden_state=encoder_outputs.last_hidden_state,
                               encoder_hidden_states=encoder_outputs.hidden_states,
                               encoder_attentions=encoder_outputs.attentions)


def _cache_arg(cache, past_key_values):
    """transformers 5 hands the running KV cache over as `cache`; `past_key_values`, the older name, still works
    with transformers' deprecation warning. Dropping either would restart the decoder at position 0 with only the
    newest token at every step."""
    if past_key_values is None:
        return cache
    warnings.warn("`past_key_values` is deprecated: pass the KV cache as `cache`", FutureWarning, stacklevel=3)
    return past_key_values if cache is None else cache


def _keep(states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """(B, Lt, D) -> the positions the head scores: the last `logits_to_keep` (0 = all) or the given indices."""
    if isinstance(logits_to_keep, torch.Tensor):
        return states[:, logits_to_keep]
    return states[:, -logits_to_keep:] if logits_to_keep else states


UnifiedModel = UnifiedForConditionalGeneration  # the short name the docs use
