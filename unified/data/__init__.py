"""Data: rows from local files or a `datasets.Dataset`, a media check before training, and the built-in synthetic
audio-visual world."""

from unified.data.check import check_media
from unified.data.files import BadRow, RowReport, load_data_dir, read_rows, rows_from_dataset

__all__ = ["BadRow", "RowReport", "check_media", "load_data_dir", "read_rows", "rows_from_dataset"]
