"""Per-feature standardization of float inputs: the mean and standard deviation of each feature
over the training split's valid steps (padding excluded), saved in the run's
:class:`~perceptron1_jax.data.DataInfo` and applied to every split and to every input the run
reads later (``eval``, ``predict``, the test split): ``x' = (x - mean) / std`` at valid steps,
padded steps left at 0. A constant feature (std below :data:`MIN_STD`) is divided by 1.

Regression targets are standardized the same way, per output, by the training split's statistics
(``target_mean``/``target_std``): the model learns ``(y - mean) / std``, its evaluation loss is the
mean squared error in those units, and :func:`unstandardize_outputs` maps its outputs back to the
targets' own units for ``predict``."""

from __future__ import annotations

import dataclasses

import numpy as np

from perceptron1_jax.data.source import Data, DataError, DataInfo
from perceptron1_jax.tasks import Dataset

MIN_STD = 1e-8


def valid_steps(xs: np.ndarray, lengths) -> np.ndarray:
    """``(n, time)`` bool: the steps of ``xs`` inside each example's length (all without lengths)."""
    if lengths is None:
        return np.ones(xs.shape[:2], bool)
    return np.arange(xs.shape[1])[None, :] < np.asarray(lengths)[:, None]


def input_stats(xs, lengths=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per feature of float inputs ``xs: (n, time, features)`` over their valid steps."""
    xs = np.asarray(xs, np.float64)
    values = xs[valid_steps(xs, lengths)]  # (valid steps, features)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    std = np.where(std < MIN_STD, 1.0, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def standardize_inputs(xs, lengths, info: DataInfo) -> np.ndarray:
    """``xs`` (float ``(n, time, features)``) standardized with ``info``'s statistics (unchanged when
    ``info`` has none); padded steps are 0."""
    if info.input_mean is None:
        return xs
    xs = np.asarray(xs)
    mean = np.asarray(info.input_mean, np.float64)
    std = np.asarray(info.input_std, np.float64)
    if xs.ndim != 3 or xs.shape[2] != mean.size:
        raise DataError(f"{info.source or 'inputs'}: expected float inputs of {mean.size} features to standardize, "
                        f"got {xs.dtype} {xs.shape}")
    scaled = (xs.astype(np.float64) - mean) / std
    scaled = np.where(valid_steps(xs, lengths)[:, :, None], scaled, 0.0)
    return scaled.astype(xs.dtype)


def target_stats(split: Dataset, many_to_many: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per output of float targets ``(n, k)`` (or ``(n, time, k)`` over valid steps)."""
    ys = np.asarray(split.labels, np.float64)
    return input_stats(ys if many_to_many else ys[:, None, :], split.lengths if many_to_many else None)


def standardize_split(split: Dataset | None, info: DataInfo) -> Dataset | None:
    if split is None:
        return None
    split = split._replace(xs=standardize_inputs(split.xs, split.lengths, info))
    if info.target_mean is None:
        return split
    ys = np.asarray(split.labels)
    scaled = (ys.astype(np.float64) - np.asarray(info.target_mean)) / np.asarray(info.target_std)
    return split._replace(labels=scaled.astype(ys.dtype))


def unstandardize_outputs(outputs, info: DataInfo):
    """A regression model's ``outputs (..., k)`` in the targets' own units (unchanged without target
    statistics)."""
    if info.target_mean is None:
        return outputs
    out = np.asarray(outputs)
    return (out.astype(np.float64) * np.asarray(info.target_std) + np.asarray(info.target_mean)).astype(out.dtype)


def standardized(data: Data) -> Data:
    """``data`` with its float inputs (and regression targets) standardized by the statistics of its
    training split, which its info now holds (a ``ValueError`` for token inputs)."""
    if data.info.input_size is None:
        raise ValueError(f"standardize: expected float inputs, got the token ids of {data.info.source}")
    train = data.train
    mean, std = input_stats(train.xs, train.lengths)
    info = dataclasses.replace(data.info, input_mean=mean, input_std=std)
    if not info.classifier:
        target_mean, target_std = target_stats(train, info.many_to_many)
        info = dataclasses.replace(info, target_mean=target_mean, target_std=target_std)
    return Data(standardize_split(train, info), standardize_split(data.eval, info), info,
                standardize_split(data.test, info))
