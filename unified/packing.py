"""The packing names at their earlier address: rows are packed by `unified.training.packing`, and the model reads
the packed rows' segment ids through `unified.model.segments`."""

from unified.model.segments import segment_mask, shift_right_segments
from unified.training.packing import pack_items

__all__ = ["pack_items", "segment_mask", "shift_right_segments"]
