"""One training session of a single run: :class:`Loop` holds the run's config, data, step and
folder around its :class:`~perceptron1_jax.training.state.RunState`, with one method per thing
:func:`~perceptron1_jax.training.loop.train` does after a step; :func:`start_loop` checks and
builds it all before the first step."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from perceptron1_jax import checkpoint
from perceptron1_jax.data import Data, chance
from perceptron1_jax.online import start_stream
from perceptron1_jax.parallel import first_copy, replicate, shard_batch
from perceptron1_jax.training.config import TrainConfig, check_config, check_run, task_info
from perceptron1_jax.training.device_choice import choose_devices
from perceptron1_jax.training.evaluation import (
    describe_eval,
    describe_test,
    evaluate_split,
    format_value,
    gradient_flow_of,
    json_scalar,
)
from perceptron1_jax.training.ingredients import (
    dropout_key_of,
    get_batch,
    initial_params,
    on_device,
    run_data,
    run_keys,
    stream_batch,
)
from perceptron1_jax.training.resume import load_checkpoint, restore_stream, resume_from
from perceptron1_jax.training.run_folder import RunFolder, check_out_dir, saved_best_loss
from perceptron1_jax.training.state import NonFiniteStop, RunState, SignalStop, stop_requested
from perceptron1_jax.training.step import gradient_agreement, one_device_reason, run_mesh, run_step


@dataclasses.dataclass
class Loop:
    """One training session: the run's config, data, step function and folder around its
    :class:`RunState`, with one method per thing the loop does after a step."""

    cfg: TrainConfig
    state: RunState
    data: Data
    step_fn: Callable
    shard: Mesh | None  # the mesh each batch is split over (None: the truncated step takes it whole)
    shuffle_key: jax.Array
    folder: RunFolder
    say: Callable[[str], None]
    bar: object | None = None  # the progress bar (tqdm), if shown
    nonfinite: int = 0  # consecutive non-finite steps
    tick: tuple[float, int] = (0.0, 0)  # (time, step) of the last metrics line
    best: tuple | None = None  # (step, params on the host) of the lowest evaluation loss of this session

    @property
    def keeps_best(self) -> bool:
        """The run keeps its best checkpoint: ``keep_best``, or a test split to score it on."""
        return self.cfg.keeps_best or self.data.test is not None

    def step(self):
        """Draw this step's batch and apply one update; returns ``(batch, metrics)``."""
        state, cfg = self.state, self.cfg
        key = dropout_key_of(cfg, state.step)
        if state.stream is not None:  # each lane reads on where the last step stopped, its state and influence kept
            batch = stream_batch(self.data.train, state.step, cfg.batch_size)
            state.params, state.opt_state, metrics, state.stream = self.step_fn(state.params, state.opt_state, batch,
                                                                                key, state.stream)
            state.step += 1
            return batch, metrics
        batch = get_batch(self.data.train, self.shuffle_key, state.step, cfg.batch_size)
        fed = batch if self.shard is None else shard_batch(batch, self.shard)
        state.params, state.opt_state, metrics = self.step_fn(state.params, state.opt_state, fed, key)
        state.step += 1
        return batch, metrics

    def guard(self, metrics) -> None:
        """Count a skipped non-finite step (logged); stop after ``max_nonfinite`` in a row."""
        state, cfg = self.state, self.cfg
        if bool(metrics["finite"]):
            self.nonfinite = 0
            return
        self.nonfinite += 1
        self.say(f"step {state.step}: non-finite loss or gradients (loss {float(metrics['loss']):.4g}): "
                 f"update skipped ({self.nonfinite} in a row)")
        self.folder.record(state, {"step": state.step, "nonfinite": True})
        if self.nonfinite >= cfg.max_nonfinite:
            self.folder.save(state)
            where = f", checkpointed at step {state.step}" if self.folder.out is not None else ""
            raise NonFiniteStop(
                f"step {state.step}: {self.nonfinite} consecutive steps with a non-finite loss or gradient "
                f"(max_nonfinite {cfg.max_nonfinite}): stopped; the parameters are those of the last "
                f"finite update{where}", state)

    def log_metrics(self, metrics) -> None:
        """Record the step's metrics with its rate since the last record; show them."""
        now, step = time.perf_counter(), self.state.step
        rate = (step - self.tick[1]) / max(now - self.tick[0], 1e-9)
        self.tick = (now, step)
        entry = {"step": step, **{k: json_scalar(v) for k, v in metrics.items() if k != "finite"},
                 "steps_per_sec": rate}
        self.folder.record(self.state, entry)
        accuracy = f", accuracy {format_value(entry['accuracy'], '.3f')}" if "accuracy" in entry else ""
        if self.bar is not None:
            self.bar.set_postfix(loss=format_value(entry["loss"], ".4f"), it_s=f"{rate:.0f}",
                                 **({"acc": format_value(entry["accuracy"], ".3f")} if accuracy else {}))
        else:
            self.say(f"step {step}: loss {format_value(entry['loss'], '.4f')}{accuracy}, "
                     f"grad norm {format_value(entry['grad_norm'], '.3g')}")

    def log_gradient_flow(self, batch) -> None:
        """Record the ``||dL/dh_t||`` profile (and each step's share of ``dL/dW_h``) on ``batch``."""
        state = self.state
        flow = gradient_flow_of(self.cfg, first_copy(state.params), *batch, spec=state.spec)
        self.folder.record(state, {"step": state.step,
                                   "gradflow_dh_norm": [json_scalar(v) for v in jax.device_get(flow.dh_norm)],
                                   "gradflow_recurrent": [json_scalar(v) for v in
                                                          jax.device_get(flow.recurrent_contribution)]})

    def evaluate_reached_target(self) -> bool:
        """Evaluate on the held-out split (the validation split of a run with a test split) and
        record it; whether the target accuracy is reached. An empty split (``val_fraction`` 0 with
        a test split) is never evaluated."""
        state, cfg, info = self.state, self.cfg, self.state.info
        if self.data.eval.xs.shape[0] == 0:
            return False
        scores = {k: json_scalar(v) for k, v in evaluate_split(first_copy(state.params), self.data.eval,
                                                               state.spec).items()}
        entry = {"step": state.step, "eval_loss": scores["loss"]}
        if "accuracy" in scores:
            entry["eval_accuracy"] = scores["accuracy"]
        self.folder.record(state, entry)
        self.say(f"step {state.step}: {describe_eval(entry, info)}")
        if self.keeps_best and self.folder.save_best(state, entry["eval_loss"]):
            self.best = (state.step, jax.device_get(first_copy(state.params)))
        if info.classifier and cfg.target > 0 and (scores["accuracy"] or 0) >= cfg.target:
            self.say(f"reached the target accuracy {cfg.target} at step {state.step}: stopping")
            state.stopped_early = True
        return state.stopped_early

    def stop_by(self, signum: int) -> None:
        """Checkpoint the step reached and raise :class:`SignalStop` for ``signum``."""
        self.folder.save_if_new(self.state)
        where = f"; checkpoint of step {self.state.step} in {self.folder.out}: continue with --resume" \
            if self.folder.out else ""
        raise SignalStop(f"stopped by {signal.Signals(signum).name} after step {self.state.step}{where}", self.state,
                         signum)

    def finish(self) -> None:
        """After the last step and its checkpoint: with a test split, score the best checkpoint
        on it, once (``test_loss``, ``test_accuracy`` and ``test_checkpoint_step`` in
        ``metrics.jsonl`` and ``state.test``)."""
        if self.data.test is None:
            return
        state = self.state
        scored = self.folder.logged("test_loss")
        if scored:  # a finished run resumed: its test split was scored once, and stays so
            state.test = scored[-1]
            self.say(f"test split already scored by the checkpoint of step {state.test['test_checkpoint_step']}: "
                     f"{describe_test(state.test, state.info)}")
            return
        step, params = self.best_params()
        scores = evaluate_split(params, self.data.test, state.spec)
        entry = {"step": state.step, "test_loss": json_scalar(scores["loss"]), "test_checkpoint_step": step}
        if "accuracy" in scores:
            entry["test_accuracy"] = json_scalar(scores["accuracy"])
        self.folder.record(state, entry)
        state.test = entry
        self.say(f"test split scored once by the checkpoint of step {step}: {describe_test(entry, state.info)}")

    def best_params(self) -> tuple[int, object]:
        """``(step, params)`` of the lowest evaluation loss: this session's, the run folder's
        ``best.msgpack`` (a resumed run), or the last step's when nothing was evaluated."""
        if self.best is not None:
            return self.best
        if self.folder.best_loss is not None and self.folder.writes:
            saved = load_checkpoint(self.folder.out / checkpoint.BEST)
            return saved["step"], saved["params"]
        return self.state.step, first_copy(self.state.params)

    def close(self) -> None:
        """Hand back single-device parameters; close the progress bar and the metrics file."""
        self.state.params, self.state.opt_state = first_copy((self.state.params, self.state.opt_state))
        if self.bar is not None:
            self.bar.close()
        self.folder.close()


def start_loop(cfg: TrainConfig, out, *, resume: bool, progress: bool, log, check_grads: bool, params, data, mesh,
               overwrite: bool = False) -> Loop:
    """Everything :func:`train` checks and builds before its first step, in this order: the
    config, the folder, the data, the model, the devices, the parameters (or the checkpoint
    resumed), the step function; an error here stops the run before it trains."""
    if data is not None and cfg.task is not None and data.info != task_info(cfg.task_spec):
        cfg = dataclasses.replace(cfg, task=None)  # your data replaces the config's task
    check_config(cfg)
    writes = out is not None and jax.process_index() == 0  # only process 0 logs and writes to out
    if jax.process_index() != 0:
        log, progress = (lambda message: None), False
    out = check_out_dir(out, resume=resume, overwrite=overwrite) if writes else None if out is None else Path(out)
    data = run_data(cfg) if data is None else on_device(data, jnp.dtype(cfg.dtype))
    spec = check_run(cfg, data)
    default_mesh = mesh is None
    mesh = run_mesh(cfg, mesh, spec)
    if cfg.bidirectional and data.info.next_token:
        log(f"warning: bidirectional layers on the next-token data {data.info.source!r} read the token they "
            "predict (the backward direction sees step t+1): accuracy will not mean prediction")
    key, _, _, _, k_shuffle = run_keys(cfg)
    params = initial_params(cfg, spec, params)
    mesh = choose_devices(cfg, spec, mesh, out if writes else None, resume=resume, given=not default_mesh)
    optimizer, step_fn = run_step(cfg, spec, mesh)
    state = RunState(params, optimizer.init(params), 0, info=data.info, spec=spec, chance=chance(data))
    found = resume_from(out, cfg, data.info, spec, writes=writes, log=log) if resume else None
    if found is not None:
        state.params, state.opt_state, state.step, _, _ = found
    if cfg.stream:
        state.stream = start_stream(state.params, spec, cfg.gradient, cfg.batch_size)
        state.stream = state.stream if found is None else restore_stream(state.stream, found[4])
    folder = RunFolder(out, writes, cfg=cfg, spec=spec, info=data.info, key=key,
                       last_saved=None if found is None else state.step,
                       best_loss=saved_best_loss(out) if found is not None and writes else None)
    folder.write_description()
    if check_grads and state.step == 0 and not stop_requested():  # a signal in start-up: straight to its stop
        batch = get_batch(data.train, k_shuffle, 0, cfg.batch_size)
        log(f"explicit BPTT vs jax.grad on the first batch: max relative difference "
            f"{gradient_agreement(cfg, state.params, batch, spec):.1e} ({cfg.dtype})")
    shard = None if one_device_reason(cfg) is not None else mesh
    if shard is not None:  # one copy per device
        state.params, state.opt_state = replicate((state.params, state.opt_state), shard)
    folder.open_metrics()
    bar = progress_bar(cfg.steps, state.step, progress)
    return Loop(cfg, state, data, step_fn, shard, k_shuffle, folder, bar.write if bar is not None else log, bar,
                tick=(time.perf_counter(), state.step))


def progress_bar(total, initial, enabled):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; keep working without it
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
