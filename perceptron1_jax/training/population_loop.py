"""A population's training session: :class:`PopulationLoop` is the single run's
:class:`~perceptron1_jax.training.session.Loop` with every method done per member, so
:func:`~perceptron1_jax.training.loop.train` drives both with one loop.

Per member: its metrics and evaluations (``metrics.jsonl`` entries carry ``"member": k``), its
non-finite count (``max_nonfinite`` in a row freezes it, marked ``stopped: "nonfinite"``; the run
stops with :class:`~perceptron1_jax.training.state.NonFiniteStop` only when every member has),
and its target (a member reaching ``cfg.target`` is frozen, ``stopped: "target"``; the run goes
on until every member is done or the last step). A frozen member's parameters and optimizer
state stay as they were. Checkpoints hold the stacked state and every member's status.
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from perceptron1_jax.data import chance
from perceptron1_jax.online import start_stream
from perceptron1_jax.training.config import TrainConfig, check_config, check_run, task_info
from perceptron1_jax.training.evaluation import describe_eval, evaluate_members, gradient_flow_of, json_scalar
from perceptron1_jax.training.ingredients import get_batch, init_run_params, seed_keys
from perceptron1_jax.training.population import Population, check_population, member_table, settings
from perceptron1_jax.training.population_best import BestMembers, test_members
from perceptron1_jax.training.population_step import (
    Layout,
    PopulationData,
    check_memory,
    describe_layout,
    first_members,
    hyper_values,
    init_optimizer_states,
    init_population,
    make_population_step,
    member_of,
    member_shardings,
    member_split,
    pad_members,
    population_data,
    population_layout,
    population_spec,
)
from perceptron1_jax.training.resume import restore, restore_stream, resume_from
from perceptron1_jax.training.run_folder import RunFolder, check_out_dir
from perceptron1_jax.training.session import Loop, progress_bar
from perceptron1_jax.training.state import NonFiniteStop, PopulationState, stop_requested
from perceptron1_jax.training.step import gradient_agreement
from perceptron1_jax.training.summary import describe_summary, population_summary


@dataclasses.dataclass
class PopulationLoop(Loop):
    """:class:`~perceptron1_jax.training.session.Loop` of a population (``state`` a
    :class:`~perceptron1_jax.training.state.PopulationState`)."""

    members: tuple = ()
    population_data: PopulationData | None = None
    layout: Layout | None = None
    member_args: tuple = ()  # (which, seeds, hyper) on the mesh
    active: np.ndarray | None = None  # (padded,) bool: the members still training
    best: BestMembers | None = None  # each member's best checkpoint (keep_best or a test split)

    def live(self) -> list[int]:
        return [k for k in range(self.state.size) if self.active[k]]

    def step(self):
        state = self.state
        active = jax.device_put(self.active, member_shardings(self.layout)[0])
        state.params, state.opt_state, metrics, state.stream = self.step_fn(
            state.params, state.opt_state, active, *self.member_args, self.population_data.train,
            jnp.asarray(state.step, jnp.int32), state.stream)
        state.step += 1
        return None, {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}

    def freeze(self, k: int, why: str) -> None:
        self.active[k] = False
        self.state.status[k]["stopped"] = why
        self.folder.record(self.state, {"step": self.state.step, "member": k, "stopped": why})

    def guard(self, metrics) -> None:
        """Per member: count a skipped non-finite step; freeze it after ``max_nonfinite`` in a row.
        Every member frozen for non-finite values stops the run (:class:`NonFiniteStop`)."""
        state, cfg = self.state, self.cfg
        for k in self.live():
            status = state.status[k]
            if metrics["finite"][k]:
                status["nonfinite"] = 0
                continue
            status["nonfinite"] += 1
            self.folder.record(state, {"step": state.step, "member": k, "nonfinite": True})
            if status["nonfinite"] >= cfg.max_nonfinite:
                self.freeze(k, "nonfinite")
                self.say(f"step {state.step}: member {k}: {status['nonfinite']} consecutive non-finite steps "
                         f"(max_nonfinite {cfg.max_nonfinite}): frozen at its last finite update")
        self._stop_when_done()

    def _stop_when_done(self) -> None:
        state = self.state
        if self.live():
            return
        if all(s["stopped"] == "nonfinite" for s in state.status):
            self.folder.save(state)
            where = f", checkpointed at step {state.step}" if self.folder.out is not None else ""
            raise NonFiniteStop(f"step {state.step}: every member of the population stopped after "
                                f"{self.cfg.max_nonfinite} consecutive non-finite steps{where}", state)
        state.stopped_early = True

    def log_metrics(self, metrics) -> None:
        """One ``metrics.jsonl`` entry per training member; one line of means on screen."""
        now, step = time.perf_counter(), self.state.step
        rate = (step - self.tick[1]) / max(now - self.tick[0], 1e-9)
        self.tick = (now, step)
        live = self.live()
        if not live:
            return
        for k in live:
            entry = {"step": step, "member": k, **{name: json_scalar(v[k]) for name, v in metrics.items()
                                                   if name != "finite"}, "steps_per_sec": rate}
            self.folder.record(self.state, entry)
        losses = [float(metrics["loss"][k]) for k in live if np.isfinite(metrics["loss"][k])]
        line = f"loss mean {np.mean(losses):.4f} (min {min(losses):.4f}, max {max(losses):.4f})" if losses else \
            "loss nan"
        if self.bar is not None:
            self.bar.set_postfix(members=len(live), loss=f"{np.mean(losses):.4f}" if losses else "nan",
                                 it_s=f"{rate:.0f}")
        else:
            self.say(f"step {step}: {len(live)} members training, {line}")

    def log_gradient_flow(self, batch) -> None:
        """The ``||dL/dh_t||`` profile of each training member on the batch it just trained on."""
        state = self.state
        for k in self.live():
            member = self.members[k]
            data = member_split(self.population_data, k).train
            xs, labels, lengths, resets = get_batch(data, seed_keys(member.seed)[4], state.step - 1,
                                                    member.batch_size)
            params = member_of(state.params, k)
            flow = gradient_flow_of(member, params, xs, labels, lengths, resets, spec=state.spec)
            self.folder.record(state, {"step": state.step, "member": k,
                                       "gradflow_dh_norm": [json_scalar(v) for v in jax.device_get(flow.dh_norm)],
                                       "gradflow_recurrent": [json_scalar(v) for v in
                                                              jax.device_get(flow.recurrent_contribution)]})

    def evaluate_reached_target(self) -> bool:
        """Evaluate every training member; freeze those at the target. True when none is left."""
        state, cfg, info = self.state, self.cfg, self.state.info
        live = self.live()
        if not live or self.population_data.eval.xs.shape[1] == 0:
            return state.stopped_early
        real = first_members(state.params, state.size)
        scores = evaluate_members(real, self.population_data.eval, self.population_data.which, state.spec)
        entries = []
        if self.best is not None:
            self.best.update(state, {k: json_scalar(scores["loss"][k]) for k in live}, self.folder)
        for k in live:
            entry = {"step": state.step, "member": k, "eval_loss": json_scalar(scores["loss"][k])}
            if "accuracy" in scores:
                entry["eval_accuracy"] = json_scalar(scores["accuracy"][k])
            self.folder.record(state, entry)
            entries.append(entry)
            if info.classifier and cfg.target > 0 and (entry["eval_accuracy"] or 0) >= cfg.target:
                state.status[k]["target_step"] = state.step
                self.freeze(k, "target")
        mean = {key: _mean(e[key] for e in entries) for key in entries[0] if key.startswith("eval_")}
        reached = sum(s["stopped"] == "target" for s in state.status)
        target = f", {reached} of {state.size} at the target {cfg.target}" if info.classifier and cfg.target > 0 \
            else ""
        self.say(f"step {state.step}: {len(live)} members, mean {describe_eval(mean, info)}{target}")
        self._stop_when_done()
        return state.stopped_early

    def finish(self) -> None:
        """``summary.json``: per setting, over its seeds, the final and best evaluations and the
        step of the target (see :func:`~perceptron1_jax.training.summary.population_summary`)."""
        state = self.state
        ensembles = {}
        if self.population_data.test is not None and self.folder.logged("test_loss"):
            ensembles = self._scored_ensembles()  # a finished run resumed: its test split stays scored once
        elif self.population_data.test is not None:
            ensembles = test_members(state, self.population_data, self.best, self.folder)
        records = state.history
        if self.folder.writes and (self.folder.out / "metrics.jsonl").exists():  # a resumed run's earlier ones too
            self.folder.close()
            lines = (self.folder.out / "metrics.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
        state.summary = population_summary(self.members, records, state.status, self.cfg.target if
                                           state.info.classifier else 0.0, state.step, ensembles)
        self.folder.write_json("summary.json", state.summary)
        for line in describe_summary(state.summary):
            self.say(line)

    def _scored_ensembles(self) -> dict:
        """The ensembles' test accuracies of the ``summary.json`` written when the test split was scored."""
        try:
            written = json.loads((self.folder.out / "summary.json").read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        return {indices[0]: entry["ensemble_test_accuracy"] for (_, indices), entry in
                zip(settings(self.members), written) if "ensemble_test_accuracy" in entry}

    def close(self) -> None:
        """Hand back the real members' stacked state on one device; close the bar and the file."""
        state = self.state
        device = jax.local_devices()[0]
        state.params, state.opt_state = jax.device_put(first_members((state.params, state.opt_state), state.size),
                                                       device)
        if self.bar is not None:
            self.bar.close()
        self.folder.close()


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def start_population_loop(cfg: TrainConfig, population: Population, out, *, resume: bool, progress: bool, log,
                          check_grads: bool, data, mesh, params=None, overwrite: bool = False) -> PopulationLoop:
    """Everything :func:`~perceptron1_jax.training.loop.train` checks and builds before a
    population's first step: the config and every member, the folder, the data, the model, the
    layout on the devices, the compiled step and its memory, the parameters (or the checkpoint
    resumed)."""
    if data is not None and cfg.task is not None and data.info != task_info(cfg.task_spec):
        cfg = dataclasses.replace(cfg, task=None)  # your data replaces the config's task
    check_config(cfg)
    members = check_population(cfg, population)
    if jax.process_index() != 0:
        raise ValueError("population: runs in one process (process 0)")
    writes = out is not None
    out = check_out_dir(out, resume=resume, overwrite=overwrite) if writes else None
    shapes = population_data(members, data, shapes_only=True)  # a task's data is drawn after the memory check
    spec = population_spec(cfg, members, shapes.info)
    layout = population_layout(cfg, len(members), mesh)
    on_members, replicated = member_shardings(layout)
    step_fn = make_population_step(cfg, members, spec, layout)
    member_args = _member_args(cfg, members, shapes.which, layout)
    abstract = _abstract_state(cfg, members, spec, layout)
    active = jax.ShapeDtypeStruct((layout.padded,), jnp.bool_, sharding=on_members)
    train_shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), shapes.train)
    step_fn = check_memory(step_fn, (*abstract, active, *member_args, train_shapes, jax.ShapeDtypeStruct(
        (), jnp.int32, sharding=replicated), _abstract_stream(cfg, spec, abstract[0], layout)), layout)
    pdata = population_data(members, data) if isinstance(shapes.train.xs, jax.ShapeDtypeStruct) else shapes
    check_run(members[0], member_split(pdata, 0))
    pdata = pdata._replace(**{p: jax.device_put(getattr(pdata, p), replicated) for p in ("train", "eval", "test")})
    found = resume_from(out, cfg, pdata.info, spec, writes=writes, log=log, population=population) if resume else None
    if found is None:  # fresh members from their seeds (or the given params)
        params, opt_state = init_population(cfg, members, spec, layout, params)
        step, status = 0, [{"stopped": None, "nonfinite": 0, "target_step": None} for _ in members]
    else:
        params, opt_state = pad_members((found[0], found[1]), layout.padded)
        step, status = found[2], found[3]
    state = PopulationState(*jax.device_put((params, opt_state), on_members), step, info=pdata.info, spec=spec,
                            chance=chance(member_split(pdata, 0)), members=members, population=population,
                            status=status, member_infos=tuple(pdata.member_info(k) for k in range(len(members))),
                            stream=_member_streams(cfg, spec, params, layout, found))
    key = seed_keys(cfg.seed)[0]
    folder = RunFolder(out, writes, cfg=cfg, spec=spec, info=pdata.info, key=key,
                       last_saved=None if found is None else step,
                       population={"population": population.to_dict(), "members": member_table(members)})
    folder.write_description()
    if check_grads and step == 0 and not stop_requested():
        first = member_split(pdata, 0)
        batch = get_batch(first.train, seed_keys(members[0].seed)[4], 0, cfg.batch_size)
        log(f"explicit BPTT vs jax.grad on member 0's first batch: max relative difference "
            f"{gradient_agreement(members[0], member_of(params, 0), batch, spec):.1e} ({cfg.dtype})")
    folder.open_metrics()
    log(f"population of {len(members)} members: {describe_layout(layout)}")
    bar = progress_bar(cfg.steps, step, progress)
    active_now = np.asarray([s["stopped"] is None for s in status] + [False] * (layout.padded - layout.size))
    best = BestMembers.start(cfg.keeps_best or pdata.test is not None, folder, partial(restore, cfg, spec=spec), found)
    return PopulationLoop(cfg, state, member_split(pdata, 0), step_fn, None, None, folder,
                          bar.write if bar is not None else log, bar, tick=(time.perf_counter(), step),
                          members=members, population_data=pdata, layout=layout, member_args=member_args,
                          active=active_now, best=best)


def _member_args(cfg: TrainConfig, members, which, layout: Layout) -> tuple:
    """``(which, seeds, hyper)`` of the step, padded, on the members' devices: each member's data
    variant, seed and varied options (padding members copy member 0's)."""
    pad = layout.padded - layout.size
    return jax.device_put((jnp.asarray(np.concatenate([which, np.repeat(which[:1], pad)])),
                           jnp.asarray([m.seed for m in members] + [members[0].seed] * pad, jnp.int32),
                           hyper_values(members, layout.padded, jnp.dtype(cfg.dtype))), member_shardings(layout)[0])


def _member_streams(cfg: TrainConfig, spec, params, layout: Layout, found):
    """A stream run's streams stacked over the members, on their devices: fresh, or each member's
    state and influence from the checkpoint ``found`` resumed (None: not a stream run)."""
    if not cfg.stream:
        return None
    fresh = start_stream(member_of(params, 0), spec, cfg.gradient, cfg.batch_size)
    stacked = jax.tree.map(lambda a: jnp.stack([a] * (layout.padded if found is None else layout.size)), fresh)
    if found is not None:
        stacked = pad_members(restore_stream(stacked, found[4]), layout.padded)
    return jax.device_put(stacked, member_shardings(layout)[0])


def _abstract_stream(cfg: TrainConfig, spec, params, layout: Layout):
    """The ``jax.ShapeDtypeStruct`` tree of a stream run's stacked streams, nothing allocated (None:
    not a stream run)."""
    if not cfg.stream:
        return None
    single = jax.eval_shape(lambda p: start_stream(member_of(p, 0), spec, cfg.gradient, cfg.batch_size), params)
    on_members = member_shardings(layout)[0]
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct((layout.padded, *a.shape), a.dtype, sharding=on_members),
                        single)


def _abstract_state(cfg: TrainConfig, members, spec, layout: Layout):
    """``jax.ShapeDtypeStruct`` trees of the stacked ``(params, opt_state)``, nothing allocated."""
    on_members = member_shardings(layout)[0]
    single = jax.eval_shape(lambda: init_run_params(seed_keys(0)[1], cfg, spec))
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct((layout.padded, *a.shape), a.dtype), single)
    opt_state = jax.eval_shape(lambda p: init_optimizer_states(cfg, members, p, layout.padded), params)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_members), (params, opt_state))
