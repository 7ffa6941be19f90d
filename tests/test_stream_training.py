"""Training online over one stream (``TrainConfig(stream=True)``, ``--stream``): each lane of the
batch reads on through the training text, one window per step, and starts over (with a reset)
after its last; the online state and influence go on from step to step. A stream run trains as
one :func:`perceptron1_jax.online_updates` call over its lanes' whole text (float64, rtol 1e-9);
a resumed run (single or population) ends bit for bit where a straight one does, its stream read
back from the checkpoint (and given by ``load_checkpoint``); a population's members train as their
single runs; what a stream cannot read is refused by name before training, on the command line in
one line with exit status 2."""

import dataclasses
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import assert_trees_equal

import perceptron1_jax as p1
from perceptron1_jax import checkpoint
from perceptron1_jax.data import Data, DataInfo
from perceptron1_jax.diagnostics import max_relative_error
from perceptron1_jax.tasks import VOCAB, Dataset, chars_stream
from perceptron1_jax.training import Population, TrainConfig, train
from perceptron1_jax.training.ingredients import initial_params, run_optimizer, stream_batch
from perceptron1_jax.training.resume import MismatchError
from perceptron1_jax.training.step import guarded_update

pytestmark = pytest.mark.standard_promotion  # trains with optax

STREAM = TrainConfig(task="chars", cell="gru", hidden=4, embed_size=3, seq_len=4, batch_size=16, gradient="snap1",
                     online_every=2, stream=True, steps=8, eval_every=4, log_every=1, checkpoint_every=4,
                     target_accuracy=0.0, lr=0.05)
QUIET = {"progress": False, "check_grads": False, "log": lambda _: None}



def test_each_lane_reads_its_windows_in_order_and_starts_over_with_a_reset():
    ids = np.arange(7 * 3 + 1)
    data = Dataset(np.stack([ids[3 * i:3 * i + 3] for i in range(7)]), np.stack([ids[3 * i + 1:3 * i + 4]
                                                                                  for i in range(7)]))
    for step in range(7):  # 7 windows, 2 lanes: 3 windows each, window 6 never read
        xs, labels, lengths, resets = stream_batch(data, step, 2)
        expected = [3 * (lane * 3 + step % 3) for lane in range(2)]
        np.testing.assert_array_equal(np.asarray(xs)[:, 0], expected)
        np.testing.assert_array_equal(np.asarray(labels), np.asarray(xs) + 1)
        assert lengths is None
        np.testing.assert_array_equal(np.asarray(resets), [[step % 3 == 0, False, False]] * 2)
    marked = data._replace(resets=np.eye(7, 3, k=-2, dtype=bool))  # window i has a reset at step i - 2
    _, _, _, resets = stream_batch(marked, 1, 2)  # windows 1 and 4: window 4's own reset is kept
    np.testing.assert_array_equal(np.asarray(resets), [[False, False, False], [False, False, True]])


def _whole_stream(cfg: TrainConfig):
    """The lanes' text over ``cfg.steps`` steps as one batch of sequences, with their resets."""
    steps = [stream_batch(Dataset(*chars_stream(cfg.seq_len)), s, cfg.batch_size) for s in range(cfg.steps)]
    return [np.concatenate([np.asarray(batch[i]) for batch in steps], axis=1) for i in (0, 1, 3)]


@pytest.mark.parametrize("method", ["rtrl", "snap1"])
def test_a_stream_run_trains_as_one_online_updates_call_over_its_lanes_text(x64, method):
    cfg = dataclasses.replace(STREAM, dtype="float64", gradient=method)
    assert len(chars_stream(cfg.seq_len).xs) // cfg.batch_size < cfg.steps  # the lanes start over within the run
    run = train(cfg, **QUIET)
    spec, optimizer = cfg.model_spec, run_optimizer(cfg)

    def update(params, opt_state, loss, grads):
        params, opt_state, *_ = guarded_update(optimizer, cfg.clip, cfg.clip_value, params, opt_state, grads, loss)
        return params, opt_state, loss

    params = initial_params(cfg, spec)
    xs, labels, resets = _whole_stream(cfg)
    params, _, _, stream = p1.online_updates(params, xs, labels, spec, every=cfg.online_every, update=update,
                                             carry=optimizer.init(params), method=method, resets=resets)
    assert max_relative_error(run.params, params) < 1e-9
    assert max_relative_error(run.stream, stream) < 1e-9
    assert int(run.stream.step) == cfg.steps * cfg.seq_len
    params = initial_params(cfg, spec)
    opt_state = optimizer.init(params)
    for step in range(cfg.steps):  # the mutation: each step's windows from zero state and influence
        xs, labels, _, resets = stream_batch(Dataset(*chars_stream(cfg.seq_len)), step, cfg.batch_size)
        params, opt_state, _, _ = p1.online_updates(params, xs, labels, spec, every=cfg.online_every, update=update,
                                                    carry=opt_state, method=method, resets=resets)
    assert max_relative_error(run.params, params) > 1e-4


def test_a_resumed_stream_run_ends_bit_for_bit_and_its_checkpoint_holds_the_stream(tmp_path):
    cfg = dataclasses.replace(STREAM, gradient="uoro")
    straight = train(cfg, tmp_path / "straight", **QUIET)
    train(dataclasses.replace(cfg, steps=3), tmp_path / "resumed", **QUIET)
    saved = checkpoint.read_checkpoint(checkpoint.list_checkpoints(tmp_path / "resumed")[0])
    assert set(saved["stream"]) == {"state", "influence", "step"} and int(saved["stream"]["step"]) == 3 * 4
    resumed = train(cfg, tmp_path / "resumed", resume=True, **QUIET)
    assert_trees_equal(straight.params, resumed.params)
    assert_trees_equal(straight.stream, resumed.stream)
    # load_checkpoint gives the stream, to go on with in your own loop
    assert_trees_equal(straight.stream, p1.load_checkpoint(tmp_path / "straight")["stream"])
    path = checkpoint.list_checkpoints(tmp_path / "resumed")[0]
    raw = checkpoint.read_checkpoint(path)
    path.unlink()  # the newest checkpoint written again without its stream: refused, not restarted
    checkpoint.save_checkpoint(tmp_path / "resumed", step=raw["step"], params=raw["params"],
                               opt_state=raw["opt_state"], key=raw["key"], config=raw["config"], spec=raw["spec"],
                               data=raw["data"])
    with pytest.raises(MismatchError, match="stream: expected .* to hold the state and influence of a stream run"):
        train(dataclasses.replace(cfg, steps=10), tmp_path / "resumed", resume=True, **QUIET)


def test_each_member_of_a_stream_population_trains_as_its_single_run_and_resumes(x64, tmp_path):
    cfg = dataclasses.replace(STREAM, gradient="uoro", dtype="float64", steps=4, checkpoint_every=2)
    members = train(cfg, tmp_path / "straight", population=Population(seeds=2), **QUIET)
    for seed in (0, 1):
        single = train(dataclasses.replace(cfg, seed=seed), **QUIET)
        member = jax.tree.map(lambda a, seed=seed: a[seed], (members.params, members.stream))
        assert max_relative_error(member, (single.params, single.stream)) < 1e-9, seed
    train(dataclasses.replace(cfg, steps=2), tmp_path / "resumed", population=Population(seeds=2), **QUIET)
    resumed = train(cfg, tmp_path / "resumed", resume=True, population=Population(seeds=2), **QUIET)
    assert_trees_equal((members.params, members.stream), (resumed.params, resumed.stream))
    member_1 = p1.load_checkpoint(tmp_path / "resumed", member=1)["stream"]
    assert_trees_equal(jax.tree.map(lambda a: a[1], members.stream), member_1)


@pytest.mark.parametrize("changes, message", [
    ({"task": "parity", "seq_len": 4, "embed_size": None},
     "stream: expected a task whose examples continue each other (chars), got 'parity'"),
    ({"online_every": None}, "stream: expected the default False here"),
    ({"batch_size": 128}, "batch_size: expected at most the 111 training examples"),
])
def test_what_a_stream_cannot_read_is_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(dataclasses.replace(STREAM, **changes), **QUIET)


def test_data_whose_windows_do_not_continue_each_other_is_refused_by_name():
    cfg = dataclasses.replace(STREAM, task=None)
    windows = chars_stream(4)
    info = DataInfo("language_model", len(VOCAB), True, vocab_size=len(VOCAB), source="windows")
    shuffled = Dataset(windows.xs[::-1], windows.labels[::-1])
    with pytest.raises(ValueError, match="stream: expected training windows that continue each other .*got "
                                         "window 1 of windows starting with"):
        train(cfg, data=Data(shuffled, windows, info), **QUIET)
    floats = DataInfo("regression", 1, True, input_size=1, source="a series")
    series = Dataset(np.zeros((8, 4, 1), np.float32), np.zeros((8, 4, 1), np.float32))
    with pytest.raises(ValueError, match="stream: expected next-token data whose windows continue each other"):
        train(dataclasses.replace(cfg, batch_size=2, embed_size=None), data=Data(series, series, floats), **QUIET)


def test_the_command_line_trains_a_stream_on_a_text_file_or_refuses_in_one_line(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat and the dog sat on the log. " * 20)
    args = [sys.executable, "-m", "perceptron1_jax", "train", "--data", str(text), "--cell", "gru", "--hidden", "8",
            "--seq-len", "8", "--batch-size", "4", "--steps", "3", "--gradient", "snap1", "--no-progress", "--stream"]
    done = subprocess.run([*args, "--online-every", "4", "--out", str(tmp_path / "a")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    saved = checkpoint.read_checkpoint(checkpoint.list_checkpoints(tmp_path / "a")[0])
    assert int(saved["stream"]["step"]) == 3 * 8
    refused = subprocess.run([*args, "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "stream: expected the default False here" in refused.stderr


def test_a_step_that_is_not_finite_hands_on_the_stream_it_started_from(tmp_path):
    from perceptron1_jax.training import NonFiniteStop

    cfg = dataclasses.replace(STREAM, optimizer="sgd", lr=1e38, steps=6, max_nonfinite=3)  # float32 overflows
    with pytest.raises(NonFiniteStop) as stop:
        train(cfg, tmp_path / "run", **QUIET)
    stream, steps = stop.value.state.stream, stop.value.state.step
    finite_steps = int(stream.step) // cfg.seq_len
    assert 0 < finite_steps < steps  # the skipped steps did not move it on
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(stream))
    saved = checkpoint.read_checkpoint(checkpoint.list_checkpoints(tmp_path / "run")[0])
    assert int(saved["stream"]["step"]) == int(stream.step)  # the stop's checkpoint holds it
