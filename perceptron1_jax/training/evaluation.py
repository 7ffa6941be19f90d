"""Scores of a run's model: a whole split evaluated in chunks, the gradient-flow profile a run
logs, and the one-line descriptions and JSON values the log and ``metrics.jsonl`` show."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from perceptron1_jax.data import DataInfo
from perceptron1_jax.diagnostics import model_gradient_flow
from perceptron1_jax.model import evaluate, model_apply, scored_units
from perceptron1_jax.spec import ModelSpec
from perceptron1_jax.tasks import Dataset
from perceptron1_jax.training.config import TrainConfig

EVAL_CHUNK = 1024  # examples per evaluation call (bounds the memory of a big split)


def evaluate_split(params, data: Dataset, spec: ModelSpec, chunk: int = EVAL_CHUNK) -> dict:
    """``{"loss", "accuracy"}`` (classifiers) or ``{"loss"}`` (MSE) on a whole split, no dropout:
    the mean over every scored example (many-to-one) or valid step (many-to-many), computed in
    chunks of ``chunk`` examples."""

    def score(part: Dataset):
        return (evaluate(params, part.xs, part.labels, spec, part.lengths, None, part.resets),
                scored_units(spec, part.xs, part.lengths))

    return {k: float(v) for k, v in _chunked_means(score, data, 0, chunk).items()}


def evaluate_members(params, data: Dataset, which, spec: ModelSpec, chunk: int = EVAL_CHUNK) -> dict:
    """:func:`evaluate_split` of every member of a population at once: ``params`` with a leading
    member axis, ``data`` with a leading axis over datasets, ``which: (members,)`` each member's
    dataset; ``{name: (members,) numpy array}``."""
    which = jnp.asarray(which)
    return _chunked_means(lambda part: _member_scores(spec)(params, part, which), data, 1, chunk)


@functools.lru_cache(maxsize=32)
def _member_scores(spec: ModelSpec) -> Callable:
    def one(params, part: Dataset):
        return (evaluate(params, part.xs, part.labels, spec, part.lengths, None, part.resets),
                scored_units(spec, part.xs, part.lengths))

    def members(params, data: Dataset, which):
        part = Dataset(*(None if a is None else a[which] for a in data))
        return jax.vmap(one)(params, part)

    return jax.jit(members)


def _chunked_means(score: Callable, data: Dataset, axis: int, chunk: int) -> dict:
    """Means of ``score(part) -> (scores, units)`` over ``data`` cut in chunks of ``chunk``
    examples along ``axis``, weighted by the units each chunk scores."""
    n = data.xs.shape[axis]
    totals, count = {}, 0.0
    for start in range(0, n, chunk):
        part = Dataset(*(None if a is None else jax.lax.slice_in_dim(a, start, min(start + chunk, n), axis=axis)
                         for a in data))
        scores, units = score(part)
        units = np.asarray(units, np.float64)
        for k, v in scores.items():
            totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64) * units
        count = count + units
    return {k: v / count for k, v in totals.items()}


def ensemble_accuracy(members: list, spec: ModelSpec, chunk: int = EVAL_CHUNK) -> float:
    """Accuracy of the members' mean softmax probabilities (a classifier's ensemble) on one split;
    ``members``: ``(params, split)`` per member, the splits holding the same examples and labels
    (each member's inputs as it reads them: standardized by its own statistics). Padded steps of
    many-to-many labels are not counted."""
    labels, lengths = np.asarray(members[0][1].labels), members[0][1].lengths
    total = 0.0
    for params, split in members:
        parts = [jax.nn.softmax(model_apply(params, split.xs[i:i + chunk], spec,
                                            None if split.lengths is None else split.lengths[i:i + chunk],
                                            resets=None if split.resets is None else split.resets[i:i + chunk]),
                                axis=-1)
                 for i in range(0, split.xs.shape[0], chunk)]
        total = total + np.concatenate([np.asarray(p, np.float64) for p in parts])
    right = total.argmax(-1) == labels
    if labels.ndim == 2 and lengths is not None:
        right = right[np.arange(labels.shape[1])[None, :] < np.asarray(lengths)[:, None]]
    return float(np.mean(right))


def make_evaluate(cfg: TrainConfig, spec: ModelSpec | None = None) -> Callable:
    """``evaluate(params, data) -> {"loss", "accuracy"}`` on a whole split (:func:`evaluate_split`)."""
    spec = spec or cfg.model_spec
    return lambda params, data: evaluate_split(params, data, spec)


def gradient_flow_of(cfg: TrainConfig, params, xs, labels, lengths=None, resets=None, *,
                     spec: ModelSpec | None = None):
    """:class:`~perceptron1_jax.diagnostics.GradientFlow` of the first layer's forward direction
    (the gradient that has crossed every layer above) on one batch."""
    return model_gradient_flow(params, xs, labels, spec or cfg.model_spec, lengths, resets=resets)[0]["fwd"]


def json_scalar(value):
    """A metric as a JSON value: a bool, a float, or None for NaN and inf (strict JSON has neither)."""
    value = np.asarray(jax.device_get(value))
    if value.dtype == np.bool_:
        return bool(value)
    return float(value) if np.isfinite(value) else None


def format_value(value, spec: str) -> str:
    """``value`` formatted by ``spec``; ``nan`` for a metric that was not finite (None)."""
    return "nan" if value is None else format(value, spec)


def describe_eval(entry: dict, info: DataInfo, split: str = "eval", digits: int = 3) -> str:
    """``eval loss 1.2345 (1.781 bits/token), eval accuracy 0.612`` / ``eval loss (MSE) 0.0123 (RMSE
    0.111)`` from ``entry``'s ``<split>_loss`` and ``<split>_accuracy``."""
    loss = entry[f"{split}_loss"]
    if loss is None:
        return f"{split} loss nan (non-finite)"
    if not info.classifier:
        units = ", standardized targets" if info.target_mean is not None else ""
        return f"{split} loss (MSE{units}) {loss:.4g} (RMSE {math.sqrt(loss):.4g})"
    bits = f" ({loss / math.log(2):.3f} bits/{info.tokens[:-1] if info.tokens else 'token'})" if info.next_token else ""
    return f"{split} loss {loss:.4f}{bits}, {split} accuracy {format_value(entry[f'{split}_accuracy'], f'.{digits}f')}"


def describe_test(entry: dict, info: DataInfo) -> str:
    """``test loss 0.1234, test accuracy 0.9750``: :func:`describe_eval` of the test split's scores."""
    return describe_eval(entry, info, "test", digits=4)
