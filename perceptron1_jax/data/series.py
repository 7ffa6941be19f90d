"""A CSV time series as a data source: one row per time step, one or more numeric columns, an
optional header row. Example ``i`` is the window of rows ``i .. i+seq_len-1``; its target is row
``i+seq_len`` (every column: many-to-one regression with mean squared error). A seeded random
``val_fraction`` of the windows is the evaluation split. Values are used as given (scale them
first if the columns differ by orders of magnitude).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from perceptron1_jax.data.source import Data, DataError, DataInfo, check_seq_len, split_indices, take
from perceptron1_jax.data.text import read_text
from perceptron1_jax.tasks import Dataset

DEFAULT_SERIES_SEQ_LEN = 16


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_csv(path) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(rows (n, columns) float64, column names)`` of a numeric CSV file; an error names the file,
    the line and the column of the first bad cell."""
    path = Path(path)
    rows, header, width = [], None, None
    for line_no, cells in enumerate(csv.reader(io.StringIO(read_text(path))), start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        values = [_number(c) for c in cells]
        if not rows and header is None and any(v is None for v in values):
            header, width = tuple(c.strip() for c in cells), len(cells)
            continue
        if width is None:
            width = len(cells)
        if len(cells) != width:
            raise DataError(f"{path}: line {line_no}: expected {width} columns (as the first row), got {len(cells)}")
        for column, (cell, value) in enumerate(zip(cells, values), start=1):
            if value is None:
                raise DataError(f"{path}: line {line_no}, column {column}: expected a number, got {cell.strip()!r}")
            if not math.isfinite(value):
                raise DataError(f"{path}: line {line_no}, column {column}: expected a finite number, "
                                f"got {cell.strip()}")
        rows.append(values)
    if not rows:
        raise DataError(f"{path}: expected rows of numbers, got an empty file")
    names = header or tuple(f"column {i + 1}" for i in range(width))
    return np.asarray(rows, np.float64), names


def series_windows(rows: np.ndarray, seq_len: int) -> np.ndarray:
    """``(n - seq_len + 1, seq_len, columns)``: every window of ``seq_len`` consecutive rows."""
    index = np.arange(rows.shape[0] - seq_len + 1)[:, None] + np.arange(seq_len)[None, :]
    return rows[index]


def load_csv(path, *, seq_len: int = DEFAULT_SERIES_SEQ_LEN, val_fraction: float = 0.1, seed: int = 0) -> Data:
    """Next-row regression windows from a CSV series (see the module doc)."""
    seq_len = check_seq_len(seq_len)
    rows, names = read_csv(path)
    if rows.shape[0] < seq_len + 2:
        raise DataError(f"{path}: expected at least seq_len + 2 = {seq_len + 2} rows (two windows and their next "
                        f"rows), got {rows.shape[0]}")
    xs = series_windows(rows[:-1], seq_len)
    everything = Dataset(xs, rows[seq_len:])
    info = DataInfo("regression", rows.shape[1], False, input_size=rows.shape[1], columns=names, source=str(path))
    train_index, val_index = split_indices(xs.shape[0], val_fraction, seed, str(path))
    return Data(take(everything, train_index), take(everything, val_index), info)
