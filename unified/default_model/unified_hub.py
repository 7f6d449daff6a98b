"""Written by unified: loads this directory with the installed `unified` package (see unified.hub)."""

from unified.hub import (  # noqa: F401  (re-exported for transformers' auto_map)
    AutoTokenizerEntry,
    UnifiedBaseModel,
    UnifiedConfig,
    UnifiedForConditionalGeneration,
    UnifiedProcessorEntry,
)
