"""Optimizers as optax chains, chosen by name: SGD (with momentum), Adam, RMSProp, with optional
gradient clipping (global norm or by value), decoupled weight decay and learning-rate schedules.
Nothing hand-written.

The rates and bounds may be traced scalars (a population's members each train with their own,
under ``vmap``): the checks below apply to Python numbers, and the chain's structure depends only
on which options are set, never on their traced values.
"""

from __future__ import annotations

import jax
import optax

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def learning_rate(lr: float, schedule: str = "constant", total_steps: int = 1, warmup_steps: int = 0):
    """A float or an optax schedule ``step -> lr``.

    ``cosine`` decays from ``lr`` to 0 over ``total_steps``; ``warmup_cosine`` ramps linearly from 0
    over ``warmup_steps`` first.
    """
    if _concrete(lr) and not lr > 0:
        raise ValueError(f"lr: expected a positive learning rate, got {lr}")
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return optax.cosine_decay_schedule(lr, max(total_steps, 1))
    if schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup_steps, 1), max(total_steps, warmup_steps + 1))
    raise ValueError(f"schedule: expected one of {list(SCHEDULES)}, got {schedule!r}")


def make_optimizer(
    name: str,
    lr: float,
    *,
    momentum: float = 0.9,
    clip: float | None = None,
    clip_value: float | None = None,
    schedule: str = "constant",
    total_steps: int = 1,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """``optax.chain(clip..., [decay], optimizer)``.

    Args:
      name: ``"sgd"`` (with ``momentum``; 0 for plain SGD), ``"adam"`` or ``"rmsprop"``.
      clip: clip by global norm (``optax.clip_by_global_norm``) when set.
      clip_value: clip every entry to ``[-clip_value, clip_value]`` (``optax.clip``) when set.
      weight_decay: decoupled weight decay ``W``: Adam becomes ``optax.adamw(lr, weight_decay=W)``
        (``u = -lr (adam(g) + W p)``); SGD and RMSProp get ``optax.add_decayed_weights(W)`` before
        their update (``g + W p`` is what they scale). 0 (the default) adds nothing to the chain.
    """
    rate = learning_rate(lr, schedule, total_steps, warmup_steps)
    _check_at_least("momentum", momentum, 0, "a value >= 0")
    _check_at_least("weight_decay", weight_decay, 0, "a value >= 0")
    decays = not _concrete(weight_decay) or weight_decay > 0
    if name == "sgd":
        core = optax.sgd(rate, momentum=None if _concrete(momentum) and momentum == 0 else momentum)
    elif name == "adam":
        core = optax.adamw(rate, weight_decay=weight_decay) if decays else optax.adam(rate)
    elif name == "rmsprop":
        core = optax.rmsprop(rate)
    else:
        raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {name!r}")
    parts = []
    if clip is not None:
        _check_positive("clip", clip, "a positive global-norm bound")
        parts.append(optax.clip_by_global_norm(clip))
    if clip_value is not None:
        _check_positive("clip_value", clip_value, "a positive bound")
        parts.append(optax.clip(clip_value))
    if decays and name != "adam":
        parts.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*parts, core)


def _concrete(value) -> bool:
    """Whether ``value`` is a number known now (not a traced scalar of a population's step)."""
    return not isinstance(value, jax.core.Tracer)


def _check_positive(name: str, value, expected: str) -> None:
    if _concrete(value) and not value > 0:
        raise ValueError(f"{name}: expected {expected}, got {value}")


def _check_at_least(name: str, value, low: float, expected: str) -> None:
    if _concrete(value) and not value >= low:
        raise ValueError(f"{name}: expected {expected}, got {value}")
