"""Data: rows from local files or a `datasets.Dataset`, and the built-in synthetic audio-visual world."""

from unified.data.files import BadRow, RowReport, load_data_dir, read_rows, rows_from_dataset

__all__ = ["BadRow", "RowReport", "load_data_dir", "read_rows", "rows_from_dataset"]
