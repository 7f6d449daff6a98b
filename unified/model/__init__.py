"""The model: configuration, attention kernels, layers, media encoders, resampler, fusion, the encoder-decoder.

    from unified.model import UnifiedConfig, UnifiedForConditionalGeneration
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from unified.model import legacy_keys
from unified.model.attention import ATTENTION_FUNCTIONS, register_with_transformers
from unified.model.configuration import UnifiedConfig
from unified.model.generation import AllowedTokensLogitsProcessor, constrained_processors
from unified.model.modeling import (
    UnifiedBaseModel,
    UnifiedForConditionalGeneration,
    UnifiedModel,
    UnifiedPreTrainedModel,
)


def _register() -> None:
    # Idempotent: importing twice (or a second copy of the package) must not raise.
    try:
        AutoConfig.register("unified", UnifiedConfig)
    except ValueError:
        pass
    for auto, model in ((AutoModel, UnifiedBaseModel), (AutoModelForSeq2SeqLM, UnifiedForConditionalGeneration)):
        try:
            auto.register(UnifiedConfig, model)
        except ValueError:
            pass
    register_with_transformers()
    legacy_keys.register()  # files saved before the attention / feed-forward merge still load


_register()

__all__ = ["ATTENTION_FUNCTIONS", "AllowedTokensLogitsProcessor", "UnifiedBaseModel", "UnifiedConfig",
           "UnifiedForConditionalGeneration", "UnifiedModel", "UnifiedPreTrainedModel", "constrained_processors"]
