"""Optimizers as optax chains, chosen by name: SGD (with momentum), Adam, RMSProp, with optional
gradient clipping (global norm or by value) and learning-rate schedules. Nothing hand-written."""

from __future__ import annotations

import optax

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def learning_rate(lr: float, schedule: str = "constant", total_steps: int = 1, warmup_steps: int = 0):
    """A float or an optax schedule ``step -> lr``.

    ``cosine`` decays from ``lr`` to 0 over ``total_steps``; ``warmup_cosine`` ramps linearly from 0
    over ``warmup_steps`` first.
    """
    if not lr > 0:
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
) -> optax.GradientTransformation:
    """``optax.chain(clip..., optimizer)``.

    Args:
      name: ``"sgd"`` (with ``momentum``; 0 for plain SGD), ``"adam"`` or ``"rmsprop"``.
      clip: clip by global norm (``optax.clip_by_global_norm``) when set.
      clip_value: clip every entry to ``[-clip_value, clip_value]`` (``optax.clip``) when set.
    """
    rate = learning_rate(lr, schedule, total_steps, warmup_steps)
    if name == "sgd":
        if momentum < 0:
            raise ValueError(f"momentum: expected a value >= 0, got {momentum}")
        core = optax.sgd(rate, momentum=momentum or None)
    elif name == "adam":
        core = optax.adam(rate)
    elif name == "rmsprop":
        core = optax.rmsprop(rate)
    else:
        raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {name!r}")
    parts = []
    if clip is not None:
        if not clip > 0:
            raise ValueError(f"clip: expected a positive global-norm bound, got {clip}")
        parts.append(optax.clip_by_global_norm(clip))
    if clip_value is not None:
        if not clip_value > 0:
            raise ValueError(f"clip_value: expected a positive bound, got {clip_value}")
        parts.append(optax.clip(clip_value))
    return optax.chain(*parts, core)
