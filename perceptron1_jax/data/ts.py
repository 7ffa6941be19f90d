"""The UCR/UEA archives' ``.ts`` files (the format aeon and sktime read and write) as a data source.

A file is a header of ``@key value`` lines (``#`` or ``%`` starts a comment) and then, after
``@data``, one series per line: its channels separated by ``:``, each a comma-separated list of
numbers, then the class label (or, in a regression file, the target value) after the last ``:``::

    @problemName GunPoint
    @univariate true
    @equalLength true
    @classLabel true 1 2
    @data
    -0.647,-0.641,-0.638:2

Read: ``@problemName``, ``@univariate`` / ``@dimensions`` (the channels per row), ``@equalLength``,
``@classLabel true <labels...>`` (class ``k`` is the ``k``-th label listed; the names are kept for
``predict``), ``@targetLabel true`` (a regression file: each series' last field is its real-valued
target, trained with the mean-squared-error head), ``@missing`` and ``@timeStamps false`` (time
stamps are refused). Series of unequal
lengths are zero-padded at the end, with ``lengths``. Missing values (``?`` or ``NaN``) are an error
unless ``missing="zero"`` (``--missing zero``), which reads them as 0. Every error is a
:class:`~perceptron1_jax.data.DataError` naming the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from perceptron1_jax.data.arrays import from_arrays
from perceptron1_jax.data.source import Data, DataError

MISSING = ("error", "zero")
_MISSING_TOKENS = ("?", "nan")


def check_missing(missing: str) -> str:
    if missing not in MISSING:
        raise ValueError(f"missing: expected one of {list(MISSING)}, got {missing!r}")
    return missing


def read_ts(path, missing: str = "error") -> dict:
    """The series of a ``.ts`` file: ``{"xs": (n, time, channels) float32, "lengths": (n,) int32 or
    None (all of equal length), "labels": (n,) int32 or None (no labels), "class_names": tuple,
    "targets": (n,) float32 or None (not a regression file), "name": @problemName}``."""
    check_missing(missing)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err})") from err
    header, rows, line_numbers = {}, [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "%")):
            continue
        if "data" in header:
            rows.append(line)
            line_numbers.append(number)
            continue
        if not line.startswith("@"):
            raise DataError(f"{path}: line {number}: expected a header line '@key value' or '@data' before the "
                            f"series, got {line[:40]!r}")
        key, _, value = line[1:].partition(" ")
        header[key.lower()] = (value.strip(), number)
    if "data" not in header:
        raise DataError(f"{path}: expected a '@data' line before the series, got none")
    if header.get("timestamps", ("false",))[0].lower() == "true":
        raise DataError(f"{path}: line {header['timestamps'][1]}: @timeStamps: expected false (series of plain "
                        "values), got true")
    class_names = _class_names(path, header)
    regression = _regression(path, header, class_names)
    channels = _channels(path, header)
    if not rows:
        raise DataError(f"{path}: expected at least one series after @data, got none")
    series, labels = [], []
    for number, line in zip(line_numbers, rows):
        values, label = _parse_row(path, number, line, channels, class_names, missing, regression)
        channels = values.shape[1]  # without @univariate or @dimensions, the first row decides
        series.append(values)
        labels.append(label)
    lengths = np.asarray([s.shape[0] for s in series], np.int32)
    equal = header.get("equallength", ("",))[0].lower()
    if equal == "true" and (lengths != lengths[0]).any():
        bad = int(np.argmax(lengths != lengths[0]))
        raise DataError(f"{path}: line {line_numbers[bad]}: expected {lengths[0]} values per channel (@equalLength "
                        f"true), got {lengths[bad]}")
    xs = np.zeros((len(series), int(lengths.max()), channels), np.float32)
    for i, values in enumerate(series):
        xs[i, : values.shape[0]] = values
    return {"xs": xs, "lengths": None if (lengths == lengths[0]).all() else lengths,
            "labels": None if class_names is None else np.asarray(labels, np.int32), "class_names": class_names,
            "targets": np.asarray(labels, np.float32) if regression else None,
            "name": header.get("problemname", (path.stem,))[0]}


def _regression(path: Path, header: dict, class_names) -> bool:
    """Whether the file is a regression problem (``@targetLabel true``)."""
    if "targetlabel" not in header:
        return False
    value, number = header["targetlabel"]
    if value.lower() not in ("true", "false"):
        raise DataError(f"{path}: line {number}: @targetLabel: expected true or false, got {value!r}")
    if value.lower() == "true" and class_names is not None:
        raise DataError(f"{path}: line {number}: @targetLabel: expected either @classLabel true or @targetLabel "
                        "true, got both")
    return value.lower() == "true"


def _class_names(path: Path, header: dict) -> tuple[str, ...] | None:
    if "classlabel" not in header:
        return None
    value, number = header["classlabel"]
    flag, *names = value.split()
    if flag.lower() == "false":
        return None
    if flag.lower() != "true" or not names:
        raise DataError(f"{path}: line {number}: @classLabel: expected 'true' and the class labels, or 'false', "
                        f"got {value!r}")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: line {number}: @classLabel: expected distinct labels, got {names}")
    return tuple(names)


def _channels(path: Path, header: dict) -> int | None:
    if "dimensions" in header:
        value, number = header["dimensions"]
        if not value.isdigit() or int(value) < 1:
            raise DataError(f"{path}: line {number}: @dimensions: expected a positive integer, got {value!r}")
        return int(value)
    if header.get("univariate", ("",))[0].lower() == "true":
        return 1
    return None  # the first row decides


def _parse_row(path: Path, number: int, line: str, channels: int | None, class_names, missing: str,
               regression: bool = False):
    """``((time, channels) values, class id, target value or None)`` of one series line."""
    fields = line.split(":")
    label = None
    if regression:
        if len(fields) < 2:
            raise DataError(f"{path}: line {number}: expected the channels and a target value after ':' "
                            "(@targetLabel true), got no ':'")
        label = _target(path, number, fields.pop().strip())
    elif class_names is not None:
        if len(fields) < 2:
            raise DataError(f"{path}: line {number}: expected the channels and a class label after ':', got no ':'")
        name = fields.pop().strip()
        if name not in class_names:
            raise DataError(f"{path}: line {number}: class label {name!r}: expected one of @classLabel's "
                            f"{list(class_names)}")
        label = class_names.index(name)
    if channels is not None and len(fields) != channels:
        raise DataError(f"{path}: line {number}: expected {channels} channel{'s' if channels > 1 else ''} "
                        f"separated by ':', got {len(fields)}")
    values = [_numbers(path, number, c + 1, field, missing) for c, field in enumerate(fields)]
    if len({len(v) for v in values}) > 1:
        raise DataError(f"{path}: line {number}: expected channels of one length, got lengths "
                        f"{[len(v) for v in values]}")
    if not values[0]:
        raise DataError(f"{path}: line {number}: expected at least one value per channel, got none")
    return np.asarray(values, np.float32).T, label


def _target(path: Path, number: int, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise DataError(f"{path}: line {number}: target: expected a number (@targetLabel true), got {token!r}") \
            from None
    if not math.isfinite(value):
        raise DataError(f"{path}: line {number}: target: expected a finite number, got {token!r}")
    return value


def _numbers(path: Path, number: int, channel: int, field: str, missing: str) -> list[float]:
    out = []
    for position, token in enumerate(field.split(","), start=1):
        token = token.strip()
        if token.lower() in _MISSING_TOKENS:
            if missing == "zero":
                out.append(0.0)
                continue
            raise DataError(f"{path}: line {number}: channel {channel}, value {position}: a missing value "
                            f"({token!r}); give --missing zero to read missing values as 0")
        try:
            value = float(token)
        except ValueError:
            raise DataError(f"{path}: line {number}: channel {channel}, value {position}: expected a number, got "
                            f"{token!r}") from None
        if not math.isfinite(value):
            raise DataError(f"{path}: line {number}: channel {channel}, value {position}: expected a finite number, "
                            f"got {token!r}")
        out.append(value)
    return out


def load_ts(path, *, val_fraction: float = 0.1, seed: int = 0, missing: str = "error", stratify: bool = False,
            name: str | None = None) -> Data:
    """A ``.ts`` file as a :class:`~perceptron1_jax.data.Data`: a seeded random ``val_fraction`` of
    its series (``stratify``: of each class) is the evaluation split; the class names are
    ``@classLabel``'s. A regression file (``@targetLabel true``) has ``targets`` ``(n, 1)``, read at
    each series' last step. ``name``: how errors and the run name the source (default the path)."""
    found = read_ts(path, missing)
    if found["targets"] is not None:
        return from_arrays(found["xs"], targets=found["targets"][:, None], lengths=found["lengths"],
                           val_fraction=val_fraction, seed=seed, name=name or str(path))
    if found["labels"] is None:
        raise DataError(f"{path}: expected class labels (@classLabel true ...) or targets (@targetLabel true) to "
                        "train on, got neither")
    data = from_arrays(found["xs"], labels=found["labels"], lengths=found["lengths"],
                       num_classes=len(found["class_names"]), val_fraction=val_fraction, seed=seed,
                       name=name or str(path), stratify=stratify)
    return data._replace(info=dataclasses.replace(data.info, class_names=found["class_names"]))
