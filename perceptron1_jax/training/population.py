"""A population: many runs of one program, as a grid of seeds and float options.

A :class:`Population` lists what varies: ``seeds`` runs of consecutive seeds and, per option of
:data:`VARIED`, a tuple of values. Its members are the grid of every list times the seeds, seeds
fastest, then the options in the order of :data:`VARIED`; member ``k`` is the
:class:`~perceptron1_jax.training.config.TrainConfig` of one run (:func:`member_configs`) and
trains exactly as that run would on its own. Everything else (the cell, the sizes, the data, the
optimizer, the number of steps) is the same for every member: one compiled program trains them all.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

from perceptron1_jax.training.config import TrainConfig, check_config

# The options a population may vary (the step reads them as traced scalars), in grid order.
VARIED = ("lr", "momentum", "clip", "clip_value", "dropout", "weight_decay")


@dataclass(frozen=True)
class Population:
    """What varies between the members of a population.

    ``seeds``: members per setting, with seeds ``cfg.seed, cfg.seed + 1, ...``; each option of
    :data:`VARIED` None (the config's value for every member) or a tuple of values (one number is
    a tuple of one). Example: ``Population(seeds=5, lr=(1e-3, 3e-3))`` is 10 members.
    """

    seeds: int = 1
    lr: tuple[float, ...] | None = None
    momentum: tuple[float, ...] | None = None
    clip: tuple[float, ...] | None = None
    clip_value: tuple[float, ...] | None = None
    dropout: tuple[float, ...] | None = None
    weight_decay: tuple[float, ...] | None = None

    def __post_init__(self):
        for name in VARIED:  # a number or a list (JSON, Python) -> a tuple
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = (value,)
            if isinstance(value, list):
                value = tuple(value)
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        return {"seeds": self.seeds, **{name: None if getattr(self, name) is None else list(getattr(self, name))
                                        for name in VARIED}}

    @classmethod
    def from_dict(cls, values: dict) -> Population:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"population: unknown keys {unknown}; expected keys among {sorted(known)}")
        return cls(**values)


def check_population(cfg: TrainConfig, population: Population) -> tuple[TrainConfig, ...]:
    """The members' configs after checking ``population`` and every member (a ``ValueError``
    naming the field, the expected and the received value)."""
    if not isinstance(population, Population):
        raise TypeError(f"population: expected a Population, got {type(population).__name__}")
    if isinstance(population.seeds, bool) or not isinstance(population.seeds, int) or population.seeds < 1:
        raise ValueError(f"population.seeds: expected a positive int, got {population.seeds!r}")
    for name in VARIED:
        values = getattr(population, name)
        if values is None:
            continue
        if not isinstance(values, tuple) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ValueError(f"population.{name}: expected one or more finite numbers, got {values!r}")
    members = member_configs(cfg, population)
    for _, indices in settings(members):  # the seed changes nothing that a check reads
        check_config(members[indices[0]])
    if cfg.tbptt_k1 is not None and any(m.dropout for m in members):
        raise ValueError("population.dropout: truncated BPTT trains without dropout, got dropout values "
                         f"{sorted({m.dropout for m in members})}")
    return members


def member_configs(cfg: TrainConfig, population: Population) -> tuple[TrainConfig, ...]:
    """The members' configs: the grid of :data:`VARIED`'s lists times the seeds, member order
    seeds fastest, then ``lr``, ``momentum``, ``clip``, ``clip_value``, ``dropout``,
    ``weight_decay``."""
    lists = [getattr(population, name) or (getattr(cfg, name),) for name in VARIED]
    members = []
    for values in itertools.product(*reversed(lists)):  # the last option slowest
        setting = dict(zip(VARIED, reversed(values)))
        for offset in range(population.seeds):
            members.append(dataclasses.replace(cfg, seed=cfg.seed + offset, **setting))
    return tuple(members)


def varied_names(members: tuple[TrainConfig, ...]) -> tuple[str, ...]:
    """The options of :data:`VARIED` whose value is not the same for every member."""
    return tuple(name for name in VARIED if len({getattr(m, name) for m in members}) > 1)


def member_table(members: tuple[TrainConfig, ...]) -> list[dict]:
    """Per member: ``member``, ``seed`` and each varied option's value (``population.json``)."""
    names = varied_names(members)
    return [{"member": k, "seed": m.seed, **{name: getattr(m, name) for name in names}}
            for k, m in enumerate(members)]


def settings(members: tuple[TrainConfig, ...]) -> list[tuple[dict, list[int]]]:
    """``(values, member indices)`` per setting of the varied options (the members that differ
    only in their seed), in member order."""
    names = varied_names(members)
    groups: dict[tuple, list[int]] = {}
    for k, m in enumerate(members):
        groups.setdefault(tuple(getattr(m, name) for name in names), []).append(k)
    return [(dict(zip(names, key)), indices) for key, indices in groups.items()]
