"""Training with an online gradient (``TrainConfig(gradient=...)``, ``--gradient``): exact RTRL
trains as the explicit BPTT does (float64, parameters after several steps, rtol 1e-9); the
approximations train differently, the same run twice alike and a resumed UORO run bit for bit;
updates every k steps (``online_every``) train as the plain step at k = T, differently below, and
resume bit for bit; a population's members train as their single runs;
what an online gradient cannot train is refused by name before training, on the command line in
one line with exit status 2."""

import dataclasses

import jax
import numpy as np
import pytest

from perceptron1_jax.cli import main
from perceptron1_jax.diagnostics import max_relative_error
from perceptron1_jax.training import TrainConfig, train

pytestmark = pytest.mark.standard_promotion  # trains with optax

BASE = TrainConfig(task="three_step", cell="gru", hidden=4, batch_size=8, num_train=32, num_eval=16, steps=4,
                   eval_every=4, log_every=1, checkpoint_every=2, target_accuracy=0.0, lr=0.05)
QUIET = {"progress": False, "check_grads": False, "log": lambda _: None}


def test_exact_rtrl_trains_as_the_explicit_bptt(x64):
    cfg = dataclasses.replace(BASE, dtype="float64", layers="gru:4,elman:3", cell="lstm", hidden=32)
    rtrl = train(dataclasses.replace(cfg, gradient="rtrl"), **QUIET)
    bptt = train(cfg, **QUIET)
    assert max_relative_error(rtrl.params, bptt.params) < 1e-9


@pytest.mark.parametrize("method", ["snap1", "eprop", "uoro"])
def test_an_approximation_trains_differently_and_alike_twice(method):
    sgd = dataclasses.replace(BASE, optimizer="sgd", lr=0.5)  # the update follows the gradient (Adam's first: its sign)
    cfg = dataclasses.replace(sgd, gradient=method)
    once, twice, bptt = train(cfg, **QUIET), train(cfg, **QUIET), train(sgd, **QUIET)
    for a, b in zip(jax.tree.leaves(once.params), jax.tree.leaves(twice.params)):
        np.testing.assert_array_equal(a, b)
    assert max_relative_error(once.params, bptt.params) > 1e-3


def test_a_resumed_uoro_run_ends_bit_for_bit_where_a_straight_one_does(tmp_path):
    cfg = dataclasses.replace(BASE, gradient="uoro")
    straight = train(cfg, tmp_path / "straight", **QUIET)
    train(dataclasses.replace(cfg, steps=2), tmp_path / "resumed", **QUIET)
    resumed = train(cfg, tmp_path / "resumed", resume=True, **QUIET)
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("changes, message", [
    ({"bidirectional": True}, "gradient: expected one-direction layers for the online gradient 'snap1'"),
    ({"dropout": 0.2, "layers": "gru:4,gru:4", "cell": "lstm", "hidden": 32},
     "dropout: expected 0 with the online gradient 'snap1', got 0.2"),
    ({"tbptt_k1": 2}, "tbptt_k1: expected the default None here (the online gradient 'snap1' replaces it)"),
    ({"online_every": 3}, "online_every: expected a many-to-many task (a target at every step to update on), got "
                          "a many-to-one one"),
    ({"online_every": 4, "task": "parity", "seq_len": 6},
     "online_every: expected a divisor of the sequence length 6, got 4"),
])
def test_what_an_online_gradient_cannot_train_is_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(dataclasses.replace(BASE, gradient="snap1", **changes), **QUIET)


def test_the_command_line_trains_with_an_online_gradient_or_refuses_in_one_line(tmp_path, capsys):
    args = ["train", "--task", "three_step", "--cell", "gru", "--hidden", "4", "--batch-size", "8", "--steps", "2",
            "--num-train", "16", "--num-eval", "8", "--no-progress", "--no-gradcheck"]
    assert main([*args, "--gradient", "uoro", "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--gradient", "rtrl", "--hidden", "256", "--batch-size", "32", "--num-train", "32", "--out",
                 str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gradient: exact RTRL's influence needs batch 32 x state 256 x params" in err, err
    stream = [*args[:2], "parity", "--seq-len", "4", *args[3:], "--gradient", "snap1", "--online-every"]
    assert main([*stream, "2", "--out", str(tmp_path / "c")]) == 0
    assert main([*stream, "3", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "online_every: expected a divisor of the sequence length 4, got 3" in err, err


PARITY = dataclasses.replace(BASE, task="parity", seq_len=6, gradient="snap1")


def test_one_update_per_sequence_trains_as_the_plain_online_step(x64):
    cfg = dataclasses.replace(PARITY, dtype="float64")
    whole = train(dataclasses.replace(cfg, online_every=6), **QUIET)
    assert max_relative_error(whole.params, train(cfg, **QUIET).params) < 1e-12


def test_updates_every_k_steps_train_differently_and_resume_bit_for_bit(tmp_path):
    cfg = dataclasses.replace(PARITY, gradient="uoro", online_every=2)
    straight = train(cfg, tmp_path / "straight", **QUIET)
    train(dataclasses.replace(cfg, steps=2), tmp_path / "resumed", **QUIET)
    resumed = train(cfg, tmp_path / "resumed", resume=True, **QUIET)
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    once = train(dataclasses.replace(cfg, online_every=None), **QUIET)
    assert max_relative_error(straight.params, once.params) > 1e-3


@pytest.mark.parametrize("changes", [{}, {"task": "parity", "seq_len": 4, "online_every": 2}])
def test_each_member_of_a_population_trains_as_its_single_run(x64, changes):
    from perceptron1_jax.training import Population

    cfg = dataclasses.replace(BASE, gradient="uoro", dtype="float64", **changes)
    members = train(cfg, population=Population(seeds=2), **QUIET)
    for seed in (0, 1):
        single = train(dataclasses.replace(cfg, seed=seed), **QUIET)
        member = jax.tree.map(lambda a, seed=seed: a[seed], members.params)
        assert max_relative_error(member, single.params) < 1e-9, seed
