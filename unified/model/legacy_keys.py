"""Saved models from before the one attention module and the one feed-forward module load unchanged.

Earlier, the gated cross-attention and the perceiver had attention and feed-forward modules of their own, with other
weight names. They now use the text layers' `Attention` and `FeedForward` (`unified.model.layers`); a file written
before loads through transformers' checkpoint conversion (registered here for our model classes), bitwise:

    old name (in a saved file)                              new name
    ...xattn...attn.to_q / to_out                           ...attn.q_proj / o_proj
    ...xattn...attn.to_kv (keys and values stacked)         ...attn.k_proj, ...attn.v_proj (its two halves)
    ...xattn...ff.0 / ff.2 (Linear, GELU, Linear)           ...ff.up_proj / ff.down_proj
    ...resampler.layers.N.0.norm_media / norm_latents       ...resampler.layers.N.norm_media / norm_latents
    ...resampler.layers.N.0.to_q / to_kv / to_out           ...resampler.layers.N.attn.q_proj / k_proj, v_proj / o_proj
    ...resampler.layers.N.1.0 / 1.1 / 1.3                   ...resampler.layers.N.ff_norm / ff.up_proj / ff.down_proj

Models are saved under the new names (`UnifiedPreTrainedModel.save_pretrained` does not write the old layout back).
"""

from __future__ import annotations

from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import Chunk, WeightConverter, WeightRenaming

MODEL_CLASSES = ("UnifiedForConditionalGeneration", "UnifiedBaseModel")


def legacy_mapping() -> list:
    """The renamings (applied in order, chaining) and the one split, old layout -> new."""
    layer = r"(resampler\.layers\.\d+)"
    return [
        WeightRenaming(layer + r"\.0\.norm_", r"\1.norm_"),  # one capture group per pattern: transformers' rule
        WeightRenaming(layer + r"\.0\.to_", r"\1.attn.to_"),
        WeightRenaming(layer + r"\.1\.0\.", r"\1.ff_norm."),
        WeightRenaming(layer + r"\.1\.1\.", r"\1.ff.up_proj."),
        WeightRenaming(layer + r"\.1\.3\.", r"\1.ff.down_proj."),
        WeightRenaming(r"(xattn(?:\.\d+)?)\.ff\.0\.", r"\1.ff.up_proj."),
        WeightRenaming(r"(xattn(?:\.\d+)?)\.ff\.2\.", r"\1.ff.down_proj."),
        WeightRenaming(r"\.attn\.to_q\.", ".attn.q_proj."),
        WeightRenaming(r"\.attn\.to_out\.", ".attn.o_proj."),
        WeightConverter("attn.to_kv.weight", ["attn.k_proj.weight", "attn.v_proj.weight"], operations=[Chunk(dim=0)]),
    ]


def register() -> None:
    """Make transformers' loader apply `legacy_mapping` to our model classes (idempotent)."""
    for name in MODEL_CLASSES:
        register_checkpoint_conversion_mapping(name, legacy_mapping(), overwrite=True)
