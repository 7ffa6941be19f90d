"""How close an online gradient is to the explicit BPTT's: per method and parameter, the cosine
with the BPTT gradient and the norm ratio (:func:`gradient_alignment` for one layer,
:func:`model_gradient_alignment` for a stack; ``perceptron1 gradflow --alignment``)."""

from __future__ import annotations

import jax
import numpy as np

from perceptron1_jax.bptt import bptt, model_bptt
from perceptron1_jax.online import METHODS, model_online_grad, online_grad
from perceptron1_jax.spec import ModelSpec


def gradient_alignment(params, xs, labels, cell: str, lengths=None, h0=None, *, methods=("snap1", "eprop", "uoro"),
                       key=None, resets=None) -> dict:
    """How close each method's gradient is to the explicit BPTT's, on one batch:
    ``{method: {group: {"cosine": c, "norm_ratio": |g_method| / |g_bptt|}}}`` with one group per
    parameter (``cell/W_h``, ``readout/W``, ...) and ``"all"`` (every parameter as one vector).
    Arguments as :func:`online_grad`; ``key`` feeds UORO (and random feedback, not used here)."""
    methods = _methods(methods)
    reference = bptt(params, xs, labels, cell, lengths, h0, resets=resets)[1]
    return _alignment(reference, {m: online_grad(params, xs, labels, cell, lengths, h0, method=m, key=key,
                                                 resets=resets)[1] for m in methods})


def model_gradient_alignment(params, xs, targets, spec: ModelSpec, lengths=None, *,
                             methods=("snap1", "eprop", "uoro"), key=None, resets=None, carries0=None) -> dict:
    """:func:`gradient_alignment` of a stack of one-direction layers, against
    :func:`~perceptron1_jax.model_bptt` (groups ``layers/0/fwd/W_h``, ``head/W``, ...)."""
    methods = _methods(methods)
    reference = model_bptt(params, xs, targets, spec, lengths, resets=resets, carries0=carries0)[1]
    return _alignment(reference, {m: model_online_grad(params, xs, targets, spec, lengths, method=m, key=key,
                                                       resets=resets, carries0=carries0)[1] for m in methods})


def _methods(methods) -> tuple[str, ...]:
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        raise ValueError(f"methods: expected one or more of {list(METHODS)}, got {list(methods)}")
    return methods


def _alignment(reference, estimates: dict) -> dict:
    def groups(tree):
        leaves = {jax.tree_util.keystr(path, simple=True, separator="/"): np.ravel(np.asarray(leaf))
                  for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
        return {**leaves, "all": np.concatenate(list(leaves.values()))}

    ref = groups(reference)
    table = {}
    for method, grads in estimates.items():
        table[method] = {}
        for name, estimate in groups(grads).items():
            norms = np.linalg.norm(estimate), np.linalg.norm(ref[name])
            cosine = float(estimate @ ref[name] / (norms[0] * norms[1])) if norms[0] * norms[1] > 0 else float("nan")
            table[method][name] = {"cosine": cosine,
                                   "norm_ratio": float(norms[0] / norms[1]) if norms[1] > 0 else float("nan")}
    return table
