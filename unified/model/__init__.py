"""The model: configuration, attention kernels, layers, media encoders, resampler, fusion, the encoder-decoder.

    from unified.model import UnifiedConfig, UnifiedForConditionalGeneration
"""

from transformers import AutoConfig, AutoModelForSeq2SeqLM

from unified.model.attention import ATTENTION_FUNCTIONS, register_with_transformers
from unified.model.configuration import UnifiedConfig
from unified.model.generation import AllowedTokensLogitsProcessor, constrained_processors
from unified.model.modeling import UnifiedForConditionalGeneration, UnifiedModel, UnifiedPreTrainedModel


def _register() -> None:
    # Idempotent: importing twice (or a second copy of the package) must not raise.
    try:
        AutoConfig.register("unified", UnifiedConfig)
    except ValueError:
        pass
    try:
        AutoModelForSeq2SeqLM.register(UnifiedConfig, UnifiedForConditionalGeneration)
    except ValueError:
        pass
    register_with_transformers()


_register()

__all__ = ["ATTENTION_FUNCTIONS", "AllowedTokensLogitsProcessor", "UnifiedConfig", "UnifiedForConditionalGeneration",
           "UnifiedModel", "UnifiedPreTrainedModel", "constrained_processors"]
