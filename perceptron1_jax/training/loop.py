"""The training loop: :func:`train` takes a config (or a population of them) to its last step
(or its target accuracy), evaluating, logging and checkpointing on the way. Each piece it calls
lives on a floor below: the session it drives (:mod:`~perceptron1_jax.training.session` for a
single run, :mod:`~perceptron1_jax.training.population_loop` for a population), and under those
the config, what the run is made of, the step, the scores, the state, the folder and resuming."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from jax.sharding import Mesh

from perceptron1_jax.data import Data
from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.population import Population
from perceptron1_jax.training.population_loop import start_population_loop
from perceptron1_jax.training.session import start_loop
from perceptron1_jax.training.state import RunState, stop_requests


def train(cfg: TrainConfig, out: str | Path | None = None, *, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, check_grads: bool = True, params=None, data: Data | None = None,
          mesh: Mesh | None = None, population: Population | None = None, overwrite: bool = False,
          on_metrics: Callable[[dict], None] | None = None) -> RunState:
    """Train ``cfg`` for ``cfg.steps`` total steps; write metrics/checkpoints under ``out``.

    The data is ``cfg``'s task, its files (``cfg.data``/``cfg.classes``), or ``data``: a
    :class:`~perceptron1_jax.data.Data` made in Python (give it again to resume) or loaded by
    :func:`run_data`. ``params`` replaces the seed's initial parameters (same structure). Writes
    ``out/config.json``, ``data.json``, ``metrics.jsonl`` (one JSON object per logged step and per
    evaluation) and ``ckpt_<step>.msgpack`` every ``checkpoint_every`` steps and at the end. With
    ``resume``, continues from the newest good checkpoint in ``out``, bit for bit as an
    uninterrupted run (a folder holding only a run's ``config.json``, stopped before its first
    checkpoint, starts that run from step 0). ``out`` holds one run: a folder that holds another
    is refused unless ``resume`` continues it or ``overwrite`` replaces it. Stops early at the
    eval accuracy ``cfg.target`` (classifiers). float64 needs JAX's 64-bit mode on.

    Faults: a non-finite step is not applied; ``cfg.max_nonfinite`` in a row raise
    :class:`NonFiniteStop`; SIGTERM/SIGINT (in start-up: at step 0) checkpoint the step and raise
    :class:`SignalStop`; a failed write raises :class:`WriteFailed`; an unwritable ``out`` is a
    ``ValueError``. Devices: each step splits the batch over ``mesh`` (default: ``run_mesh``'s fixed
    rule, in ``devices.json``); only process 0 logs and writes. Details: ``docs/training.md``.

    ``on_metrics(entry)`` is called with each ``metrics.jsonl`` entry (a dict: ``step``, the
    scores, a population member's ``member``) as it is written, also without ``out``; with
    ``cfg.tensorboard`` the entries also go to TensorBoard event files in ``out/tensorboard``
    (:mod:`~perceptron1_jax.training.tensorboard`).

    ``population`` (a :class:`~perceptron1_jax.training.population.Population`): train its
    members, each exactly as its own single run, as one program (one process; members split over
    the devices of ``mesh``); returns a :class:`~perceptron1_jax.training.state.PopulationState`
    (stacked params, each member's status, the ``summary`` over seeds, also in
    ``out/summary.json``); ``params``, if given, are the members' initial parameters stacked on a
    leading member axis (member ``k`` trains as the single run given ``params[k]``). Details:
    ``docs/populations.md``.
    """
    with stop_requests() as stop:
        start = partial(start_population_loop, population=population) if population is not None else start_loop
        loop = start(cfg, out=out, resume=resume, progress=progress, log=log, check_grads=check_grads, params=params,
                     data=data, mesh=mesh, overwrite=overwrite)
        cfg, state = loop.cfg, loop.state
        if on_metrics is not None:
            loop.folder.add_sink(on_metrics)
        try:
            _run(loop, stop)
        finally:
            loop.close()
    return state


def _run(loop, stop: dict) -> None:
    """Step ``loop`` to its last step (or its target), logging, evaluating and checkpointing."""
    cfg, state = loop.cfg, loop.state
    while state.step < cfg.steps and not state.stopped_early:
        if stop["signal"] is not None:
            loop.stop_by(stop["signal"])
        batch, metrics = loop.step()
        loop.guard(metrics)
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            loop.log_metrics(metrics)
        if cfg.gradflow_every and state.step % cfg.gradflow_every == 0:
            loop.log_gradient_flow(batch)
        if loop.bar is not None:
            loop.bar.update(1)
        if (state.step % cfg.eval_every == 0 or state.step == cfg.steps) and loop.evaluate_reached_target():
            break
        if state.step % cfg.checkpoint_every == 0:
            loop.folder.save(state)
    loop.folder.save_if_new(state)
    loop.finish()
