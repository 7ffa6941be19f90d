"""Arrays as a data source: :func:`from_arrays` (numpy arrays from Python) and :func:`load_npz`.

``xs``: floats ``(n, time, features)`` or integer token ids ``(n, time)``; either ``labels``
(integers ``(n,)`` or ``(n, time)``: classification) or ``targets`` (floats ``(n, k)`` or
``(n, time, k)``: regression with mean squared error); optional ``lengths (n,)`` in ``[1, time]``
and ``resets (n, time)`` bool (True where a new segment starts: episodes or documents packed into
one row, see :func:`perceptron1_jax.unroll`). The evaluation split is ``xs_val`` with
``labels_val``/``targets_val`` (and ``lengths_val``, ``resets_val``) when
given, else a seeded random ``val_fraction`` of the examples. Every array is checked; an error
names the source, the array and the first bad index.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from perceptron1_jax.data.source import Data, DataError, DataInfo, split_indices, take
from perceptron1_jax.tasks import Dataset

NPZ_KEYS = ("xs", "labels", "targets", "lengths", "resets", "xs_val", "labels_val", "targets_val", "lengths_val",
            "resets_val", "num_classes", "vocab_size")


def _first(mask: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_xs(where: str, name: str, xs, vocab_size: int | None) -> np.ndarray:
    xs = np.asarray(xs)
    if np.issubdtype(xs.dtype, np.integer):
        if xs.ndim != 2:
            raise DataError(f"{where}: array {name!r}: expected token ids of shape (n, time), got shape {xs.shape}")
        if (xs < 0).any():
            raise DataError(f"{where}: array {name!r}: expected token ids >= 0, got {xs[xs < 0][0]} at index "
                            f"{_first(xs < 0)}")
        if vocab_size is not None and (xs >= vocab_size).any():
            raise DataError(f"{where}: array {name!r}: expected token ids < vocab_size = {vocab_size}, got "
                            f"{xs[xs >= vocab_size][0]} at index {_first(xs >= vocab_size)}")
        return xs.astype(np.int32)
    if not np.issubdtype(xs.dtype, np.floating):
        raise DataError(f"{where}: array {name!r}: expected floats or integer token ids, got dtype {xs.dtype}")
    if xs.ndim != 3:
        raise DataError(f"{where}: array {name!r}: expected float inputs of shape (n, time, features), "
                        f"got shape {xs.shape}")
    _check_finite(where, name, xs)
    return xs


def _check_finite(where: str, name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(f"{where}: array {name!r}: expected finite values, got {values[bad][0]} at index {_first(bad)}")


def _check_count(where: str, name: str, array: np.ndarray, n: int, xs_name: str) -> None:
    if array.ndim == 0 or array.shape[0] != n:
        raise DataError(f"{where}: array {name!r}: expected {n} examples (as {xs_name!r}), got shape {array.shape}")


def _check_labels(where: str, name: str, labels, xs: np.ndarray, num_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    _check_count(where, name, labels, xs.shape[0], "xs")
    if labels.shape not in ((xs.shape[0],), xs.shape[:2]):
        raise DataError(f"{where}: array {name!r}: expected shape {(xs.shape[0],)} or {xs.shape[:2]}, "
                        f"got {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            raise DataError(f"{where}: array {name!r}: expected integer class ids, got {labels[bad][0]} at index "
                            f"{_first(bad)}")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: array {name!r}: expected integer class ids, got dtype {labels.dtype}")
    bad = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    if bad.any():
        bound = f"{num_classes}" if num_classes is not None else \
            f"{max(int(labels.max()), 0) + 1}) (the classes counted as the largest id + 1"
        raise DataError(f"{where}: array {name!r}: expected class ids in [0, {bound}), got {labels[bad][0]:g} at "
                        f"index {_first(bad)}")
    return labels.astype(np.int32)


def _check_targets(where: str, name: str, targets, xs: np.ndarray, k: int | None) -> np.ndarray:
    targets = np.asarray(targets)
    _check_count(where, name, targets, xs.shape[0], "xs")
    if not np.issubdtype(targets.dtype, np.floating) and not np.issubdtype(targets.dtype, np.integer):
        raise DataError(f"{where}: array {name!r}: expected float targets, got dtype {targets.dtype}")
    if targets.ndim not in (2, 3) or (targets.ndim == 3 and targets.shape[1] != xs.shape[1]):
        raise DataError(f"{where}: array {name!r}: expected shape (n, k) or {xs.shape[:2]} + (k,), got {targets.shape}")
    if k is not None and targets.shape[-1] != k:
        raise DataError(f"{where}: array {name!r}: expected {k} outputs (as 'targets'), got shape {targets.shape}")
    targets = targets.astype(np.result_type(targets.dtype, np.float32))
    _check_finite(where, name, targets)
    return targets


def check_resets(where: str, name: str, resets, xs: np.ndarray) -> np.ndarray:
    resets = np.asarray(resets)
    if resets.dtype != np.bool_ or resets.shape != xs.shape[:2]:
        raise DataError(f"{where}: array {name!r}: expected bool (n, time) = {xs.shape[:2]} (True where a new "
                        f"segment starts), got {resets.dtype} {resets.shape}")
    return resets


def check_lengths(where: str, name: str, lengths, xs: np.ndarray) -> np.ndarray:
    lengths = np.asarray(lengths)
    _check_count(where, name, lengths, xs.shape[0], "xs")
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise DataError(f"{where}: array {name!r}: expected integers of shape ({xs.shape[0]},), got "
                        f"{lengths.dtype} {lengths.shape}")
    bad = (lengths < 1) | (lengths > xs.shape[1])
    if bad.any():
        raise DataError(f"{where}: array {name!r}: expected lengths in [1, {xs.shape[1]}] (the time axis), got "
                        f"{lengths[bad][0]} at index {_first(bad)}")
    return lengths.astype(np.int32)


def _positive(where: str, name: str, value) -> int | None:
    if value is None:
        return None
    value = np.asarray(value)
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer) or value < 1:
        raise DataError(f"{where}: {name!r}: expected a positive integer scalar, got {value!r}")
    return int(value)


DEFAULT_VAL_FRACTION = 0.1  # of TrainConfig and load_data; refused beside an own split ('xs_val')


def from_arrays(xs, labels=None, targets=None, lengths=None, *, resets=None, xs_val=None, labels_val=None,
                targets_val=None, lengths_val=None, resets_val=None, num_classes=None, vocab_size=None,
                val_fraction: float = 0.1, seed: int = 0, name: str = "arrays", stratify: bool = False) -> Data:
    """Check numpy arrays and make them a :class:`~perceptron1_jax.data.Data` (see the module doc).

    ``num_classes`` / ``vocab_size`` default to the largest label / token id (of both splits) + 1.
    ``name`` is how errors name the source (a file name for :func:`load_npz`). ``stratify``: the
    random split keeps each class's share (many-to-one labels; see
    :func:`~perceptron1_jax.data.source.split_indices`); ``val_fraction`` 0 keeps every example
    for training (an empty evaluation split).
    """
    where = name
    if (labels is None) == (targets is None):
        raise DataError(f"{where}: expected exactly one of 'labels' (classification) or 'targets' (regression), "
                        f"got {'both' if labels is not None else 'neither'}")
    given_val = {"labels_val": labels_val, "targets_val": targets_val, "lengths_val": lengths_val,
                 "resets_val": resets_val}
    if xs_val is not None and val_fraction != DEFAULT_VAL_FRACTION:
        raise ValueError(f"val_fraction: expected the default {DEFAULT_VAL_FRACTION} with {where}'s own evaluation "
                         f"split 'xs_val' (nothing is carved from 'xs'), got {val_fraction!r}")
    if xs_val is None and any(v is not None for v in given_val.values()):
        raise DataError(f"{where}: expected 'xs_val' with {[k for k, v in given_val.items() if v is not None]}, "
                        "got none")
    vocab_size, num_classes = _positive(where, "vocab_size", vocab_size), _positive(where, "num_classes", num_classes)
    xs = check_xs(where, "xs", xs, vocab_size)
    if xs.shape[0] == 0:
        raise DataError(f"{where}: array 'xs': expected at least one example, got shape {xs.shape}")
    tokens = np.issubdtype(xs.dtype, np.integer)
    if xs_val is not None:
        xs_val = check_xs(where, "xs_val", xs_val, vocab_size)
        if np.issubdtype(xs_val.dtype, np.integer) != tokens or (not tokens and xs_val.shape[2] != xs.shape[2]):
            raise DataError(f"{where}: array 'xs_val': expected inputs like 'xs' ({xs.dtype} {xs.shape[1:]}) "
                            f"apart from n and time, got {xs_val.dtype} {xs_val.shape[1:]}")
        if xs_val.shape[0] == 0:
            raise DataError(f"{where}: array 'xs_val': expected at least one example, got shape {xs_val.shape}")
        if (labels is None) != (labels_val is None):
            wanted = "labels_val" if labels is not None else "targets_val"
            raise DataError(f"{where}: expected {wanted!r} with 'xs_val' (as the training split), got none")
    if tokens and vocab_size is None:
        vocab_size = int(max(xs.max(), -1 if xs_val is None else xs_val.max())) + 1
    if labels is not None:
        labels = _check_labels(where, "labels", labels, xs, num_classes)
        if labels_val is not None:
            labels_val = _check_labels(where, "labels_val", labels_val, xs_val, num_classes)
        if num_classes is None:
            num_classes = int(max(labels.max(), -1 if labels_val is None else labels_val.max())) + 1
        many_to_many = labels.ndim == 2
        if labels_val is not None and (labels_val.ndim == 2) != many_to_many:
            raise DataError(f"{where}: array 'labels_val': expected {'(n, time)' if many_to_many else '(n,)'} "
                            f"like 'labels', got shape {labels_val.shape}")
        kind, outputs, ys, ys_val = "classification", num_classes, labels, labels_val
    else:
        targets = _check_targets(where, "targets", targets, xs, None)
        if targets_val is not None:
            targets_val = _check_targets(where, "targets_val", targets_val, xs_val, targets.shape[-1])
            if targets_val.ndim != targets.ndim:
                raise DataError(f"{where}: array 'targets_val': expected {targets.ndim} dimensions like 'targets', "
                                f"got shape {targets_val.shape}")
        many_to_many = targets.ndim == 3
        kind, outputs, ys, ys_val = "regression", targets.shape[-1], targets, targets_val
    if lengths is not None:
        lengths = check_lengths(where, "lengths", lengths, xs)
    if lengths_val is not None:
        lengths_val = check_lengths(where, "lengths_val", lengths_val, xs_val)
    if resets is not None:
        resets = check_resets(where, "resets", resets, xs)
    if resets_val is not None:
        resets_val = check_resets(where, "resets_val", resets_val, xs_val)
    info = DataInfo(kind, outputs, many_to_many, input_size=None if tokens else xs.shape[2],
                    vocab_size=vocab_size if tokens else None, source=where)
    everything = Dataset(xs, ys, lengths, resets)
    if xs_val is not None:
        return Data(everything, Dataset(xs_val, ys_val, lengths_val, resets_val), info)
    strata = ys if stratify and info.classifier and not many_to_many else None
    train_index, val_index = split_indices(xs.shape[0], val_fraction, seed, where, strata)
    return Data(take(everything, train_index), take(everything, val_index), info)


def read_npz(path, known=NPZ_KEYS) -> dict:
    """The arrays of an ``.npz`` file (no pickled objects are loaded); it must hold ``xs``, and
    names outside ``known`` are an error (a typo such as ``label`` is not silently ignored)."""
    path = Path(path)
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in archive.files:
                try:
                    arrays[name] = archive[name]
                except ValueError as err:  # an object array: ragged rows saved by np.savez
                    raise DataError(f"{path}: array {name!r}: expected a numeric array, got one numpy can only "
                                    "store as Python objects (ragged rows?)") from err
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot be read as .npz ({err})") from err
    unknown = sorted(set(arrays) - set(known))
    if unknown:
        raise DataError(f"{path}: unexpected arrays {unknown}; expected names among {list(known)}")
    if "xs" not in arrays:
        raise DataError(f"{path}: expected an array 'xs', got {sorted(arrays) or 'no arrays'}")
    return arrays


def load_npz(path, *, val_fraction: float = 0.1, seed: int = 0, stratify: bool = False) -> Data:
    """An ``.npz`` file of the arrays of :func:`from_arrays` (see :func:`read_npz`)."""
    return from_arrays(**read_npz(path), val_fraction=val_fraction, seed=seed, name=str(path), stratify=stratify)
