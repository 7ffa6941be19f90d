"""Predictions of a trained run on new inputs: an ``.npz`` (its ``xs``, optional ``lengths``), a CSV
series (every window of the run's ``seq_len`` rows predicts the row after it, the last window the
row after the file), a text file (one example per line) or one string.

:func:`predict_examples` returns arrays; :func:`prediction_records` one JSON-ready dict per
example: ``"prediction"`` (the class id, per step for a many-to-many model; or the list of outputs
for regression) and, for classifiers, ``"probabilities"``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from perceptron1_jax.data import (
    DEFAULT_SERIES_SEQ_LEN,
    DataError,
    encode_lines,
    read_csv,
    series_windows,
    tokenize,
)
from perceptron1_jax.data.arrays import NPZ_KEYS, check_lengths, check_resets, check_xs, read_npz
from perceptron1_jax.data.heldout import resolve_paths
from perceptron1_jax.data.standardize import standardize_inputs, unstandardize_outputs
from perceptron1_jax.data.text import read_text
from perceptron1_jax.data.ts import read_ts
from perceptron1_jax.model import model_apply
from perceptron1_jax.runs import Run

CHUNK = 1024  # examples per model call


class Inputs(NamedTuple):
    xs: np.ndarray  # (n, time, features) floats or (n, time) token ids
    lengths: np.ndarray | None  # (n,) or None
    resets: np.ndarray | None = None  # (n, time) bool or None


class Predictions(NamedTuple):
    predictions: np.ndarray  # class ids (n,) / (n, time), or outputs (n, k) / (n, time, k)
    probabilities: np.ndarray | None  # classifiers: (n, classes) / (n, time, classes)
    lengths: np.ndarray | None  # the inputs' lengths (many-to-many records keep the valid steps)


def predict_examples(run: Run, xs, lengths=None, resets=None) -> Predictions:
    """Run the model of ``run`` on ``xs`` (``(n, time, features)`` floats or ``(n, time)`` token
    ids, with optional ``lengths (n,)`` and ``resets (n, time)`` bool), in chunks; classifiers give
    class ids and softmax probabilities, regression models their outputs (in the targets' own units:
    a run trained on standardized targets has its outputs mapped back). Float inputs are
    standardized first with the run's saved statistics when it trained on standardized inputs (give
    raw inputs here)."""
    xs = standardize_inputs(np.asarray(xs), lengths, run.info)
    dtype = run.params["head"]["W"].dtype
    preds, probs = [], []
    for start in range(0, xs.shape[0], CHUNK):
        part = xs[start:start + CHUNK]
        part = part.astype(dtype) if np.issubdtype(part.dtype, np.floating) else part
        lens = None if lengths is None else np.asarray(lengths)[start:start + CHUNK]
        starts = None if resets is None else np.asarray(resets)[start:start + CHUNK]
        outputs = model_apply(run.params, part, run.spec, lens, resets=starts)
        if run.info.classifier:
            p = jax.nn.softmax(outputs, axis=-1)
            probs.append(np.asarray(p))
            preds.append(np.asarray(outputs.argmax(-1)))
        else:
            preds.append(unstandardize_outputs(np.asarray(outputs), run.info))
    return Predictions(np.concatenate(preds), np.concatenate(probs) if probs else None,
                       None if lengths is None else np.asarray(lengths))


def ensemble_predictions(runs: list[Run], xs, lengths=None, resets=None) -> Predictions:
    """The members' mean: of their softmax probabilities (classifiers; the class the mean ranks
    first) or of their outputs (regression), each member's from :func:`predict_examples`."""
    each = [predict_examples(run, xs, lengths, resets) for run in runs]
    if runs[0].info.classifier:
        mean = np.mean([p.probabilities for p in each], axis=0)
        return Predictions(mean.argmax(-1), mean, each[0].lengths)
    return Predictions(np.mean([p.predictions for p in each], axis=0), None, each[0].lengths)


def prediction_records(run: Run, result: Predictions) -> list[dict]:
    """One dict per example, in input order (see the module doc); many-to-many predictions are cut
    to each example's length."""
    records = []
    for i, pred in enumerate(result.predictions):
        keep = slice(int(result.lengths[i])) if result.lengths is not None and run.spec.many_to_many else ...
        record = {"prediction": np.asarray(pred)[keep].tolist()}
        if result.probabilities is not None:
            record["probabilities"] = result.probabilities[i][keep].tolist()
        records.append(record)
    return records


def text_inputs(run: Run, lines: list[str]) -> Inputs:
    """Strings (one example each) -> token ids and lengths, tokenized and encoded as the run's
    training text."""
    tokenized = [tokenize(line, run.info.tokens) for line in lines]
    for i, tokens in enumerate(tokenized):
        if not tokens:
            raise DataError(f"text: example {i + 1}: expected at least one token ({run.info.tokens}), got {lines[i]!r}")
    return _encode(run, tokenized)


def _encode(run: Run, tokenized: list[list[str]]) -> Inputs:
    ids, lengths = encode_lines(tokenized, run.vocabulary, max(len(t) for t in tokenized))
    return Inputs(ids, lengths)


def file_inputs(run: Run, path) -> Inputs:
    """The examples of a file for ``run``: ``.npz`` (``xs``, optional ``lengths`` and ``resets``), ``.ts`` (its
    series; unequal lengths padded, with ``lengths``; ``aeon:NAME``: its TEST file), ``.csv``
    (windows of the run's ``seq_len`` rows) or text (one example per line; a blank line is refused
    by its number). The inputs
    are raw: :func:`predict_examples` standardizes them."""
    path = resolve_paths(str(path))[0]
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = read_npz(path, NPZ_KEYS)  # labels or targets may be there; they are not read
        xs = check_xs(str(path), "xs", arrays["xs"], run.spec.vocab_size)
        lengths = None if "lengths" not in arrays else check_lengths(str(path), "lengths", arrays["lengths"], xs)
        resets = None if "resets" not in arrays else check_resets(str(path), "resets", arrays["resets"], xs)
        _check_input_size(run, xs, str(path))
        return Inputs(xs, lengths, resets)
    if suffix == ".ts":
        found = read_ts(path, run.config.missing)  # its labels, if any, are not read
        _check_input_size(run, found["xs"], str(path))
        return Inputs(found["xs"], found["lengths"])
    if suffix == ".csv":
        if run.spec.tokens or run.spec.many_to_many:
            raise DataError(f"{path}: expected text or .npz inputs for this model (a CSV feeds series models), "
                            "got .csv")
        rows, _ = read_csv(path)
        seq_len = run.config.seq_len or DEFAULT_SERIES_SEQ_LEN
        if rows.shape[1] != run.spec.input_size:
            raise DataError(f"{path}: expected {run.spec.input_size} columns (as the training series), "
                            f"got {rows.shape[1]}")
        if rows.shape[0] < seq_len:
            raise DataError(f"{path}: expected at least seq_len = {seq_len} rows, got {rows.shape[0]}")
        return Inputs(series_windows(rows, seq_len), None)
    if not run.spec.tokens:
        raise DataError(f"{path}: expected an .npz or .csv file for a model of float inputs, got a text file")
    return _encode(run, _text_lines(path, run.info.tokens))


def _text_lines(path, tokens: str) -> list[list[str]]:
    """Every line of a text file tokenized, one example per line: a line without a token is
    refused by its number, so the outputs stay line for line with the input."""
    lines = read_text(path).splitlines()
    if not lines:
        raise DataError(f"{path}: expected one example per line, got an empty file")
    tokenized = [tokenize(line, tokens) for line in lines]
    for number, (line, found) in enumerate(zip(lines, tokenized), start=1):
        if not found:
            raise DataError(f"{path}: line {number}: expected an example (at least one {tokens[:-1]} token), got "
                            f"{'a blank line' if not line.strip() else repr(line)}")
    return tokenized


def _check_input_size(run: Run, xs: np.ndarray, where: str) -> None:
    if run.spec.tokens != np.issubdtype(xs.dtype, np.integer):
        want = "token ids (n, time)" if run.spec.tokens else f"floats (n, time, {run.spec.input_size})"
        raise DataError(f"{where}: array 'xs': expected {want}, got {xs.dtype} {xs.shape}")
    if not run.spec.tokens and xs.shape[2] != run.spec.input_size:
        raise DataError(f"{where}: array 'xs': expected {run.spec.input_size} features per step, got shape {xs.shape}")
