"""Populations: the members' grid, each member exactly its own single run (float64, rtol 1e-9, on
one device and on two), the run folder (population.json, metrics per member, stacked checkpoints,
summary.json), resuming bit for bit, SIGKILL and SIGTERM, per-member non-finite freezing and
targets, load_checkpoint(member=k), the memory refusal, and the command line."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import assert_trees_equal, wait_for_metrics

import perceptron1_jax as p1
from perceptron1_jax.cli import main
from perceptron1_jax.training import population_step
from perceptron1_jax.training.population import Population, check_population, member_configs, settings
from perceptron1_jax.training.summary import population_summary

pytestmark = pytest.mark.standard_promotion  # training drives optax

SCRIPTS = os.path.join(os.path.dirname(__file__), "scripts")
TWO_DEVICES = {**os.environ, "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()}
TINY = p1.TrainConfig(task="three_step", cell="gru", hidden=8, batch_size=8, num_train=64, num_eval=32, steps=30,
                      eval_every=10, log_every=5, checkpoint_every=10, target_accuracy=0.0, lr=0.02)
ARGS = ["--task", "three_step", "--cell", "gru", "--hidden", "8", "--batch-size", "8", "--num-train", "64",
        "--num-eval", "32", "--target-accuracy", "0", "--no-progress", "--no-gradcheck"]


def _run(cfg, out=None, **kwargs):
    kwargs.setdefault("log", lambda _: None)
    return p1.train(cfg, out, progress=False, check_grads=False, **kwargs)


def _records(out):
    """``metrics.jsonl`` without the timings (which differ between sessions)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in records]



# --------------------------------------------------------------------------- the grid


def test_members_are_the_grid_with_seeds_fastest_then_the_options_in_order():
    members = member_configs(TINY, Population(seeds=2, lr=(0.1, 0.2), dropout=(0.0, 0.5)))
    assert [(m.seed, m.lr, m.dropout) for m in members] == [
        (0, 0.1, 0.0), (1, 0.1, 0.0), (0, 0.2, 0.0), (1, 0.2, 0.0),
        (0, 0.1, 0.5), (1, 0.1, 0.5), (0, 0.2, 0.5), (1, 0.2, 0.5)]
    assert all(dataclasses.replace(m, seed=0, lr=0.02, dropout=0.0) == TINY for m in members)
    assert [indices for _, indices in settings(members)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert len(member_configs(dataclasses.replace(TINY, seed=5), Population(seeds=3))) == 3


@pytest.mark.parametrize("population, message", [
    (Population(seeds=0), "population.seeds: expected a positive int, got 0"),
    (Population(lr=()), r"population.lr: expected one or more finite numbers, got \(\)"),
    (Population(clip=(1.0, float("nan"))), r"population.clip: expected one or more finite numbers"),
    (Population(lr=(0.1, -1.0)), "lr: expected a positive number, got -1.0"),
    (Population(dropout=(0.0, 1.0)), "dropout"),
    (Population(weight_decay=(-0.1,)), "weight_decay: expected a number >= 0, got -0.1"),
])
def test_a_bad_population_is_refused_by_name(population, message):
    with pytest.raises(ValueError, match=message):
        check_population(TINY, population)


def test_keep_best_keeps_each_members_own_best(tmp_path, x64):
    cfg = dataclasses.replace(TINY, keep_best=True, eval_every=5, lr=0.2, dtype="float64")
    state = _run(cfg, tmp_path / "pop", population=Population(seeds=2))
    for k in range(2):
        evals = [r for r in state.history if r.get("member") == k and "eval_loss" in r]
        best = min(evals, key=lambda r: r["eval_loss"])
        assert (state.status[k]["best_step"], state.status[k]["best_loss"]) == (best["step"], best["eval_loss"])
        member = p1.load_checkpoint(tmp_path / "pop" / "best.msgpack", member=k)
        single = _run(dataclasses.replace(cfg, seed=k, steps=best["step"], keep_best=False))
        for a, b in zip(jax.tree.leaves(member["params"]), jax.tree.leaves(single.params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9)  # the member is its single run


# --------------------------------------------------------------------------- exactly a single run


def _worst_differences(env=None):
    if env is None:
        sys.path.insert(0, SCRIPTS)
        try:
            from population_equals_single import worst_differences
        finally:
            sys.path.remove(SCRIPTS)
        return worst_differences()
    done = subprocess.run([sys.executable, os.path.join(SCRIPTS, "population_equals_single.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("devices", [1, 2])
def test_every_member_trains_exactly_as_its_single_run(devices, request):
    """Float64, 50 steps, rtol 1e-9: 2 seeds x 2 learning rates; a layered model with dropout
    varied (0 and 0.25) and SGD momentum varied (0 and 0.9); truncated BPTT with clipping and
    weight decay varied; one member (two devices: its batch split, as the single run's)."""
    if devices == 1:
        request.getfixturevalue("x64")
    worst = _worst_differences(None if devices == 1 else TWO_DEVICES)
    if devices == 2:  # the members split over the two devices: nothing passes between them
        assert worst.pop("collectives") == []
    assert set(worst) == {"2 seeds x 2 learning rates", "layered, dropout", "truncated", "one member"}
    assert all(err < 1e-9 for err in worst.values()), worst


# --------------------------------------------------------------------------- the run folder


def test_the_run_folder_describes_the_members_and_resumes_bit_for_bit(tmp_path):
    population = Population(seeds=2, lr=(0.02, 0.05))
    straight = _run(TINY, tmp_path / "straight", population=population)
    out = tmp_path / "split"
    _run(dataclasses.replace(TINY, steps=20), out, population=population)
    resumed = _run(TINY, out, resume=True, population=population)
    assert_trees_equal(resumed.params, straight.params)
    assert_trees_equal(resumed.opt_state, straight.opt_state)
    assert jax.tree.leaves(resumed.params)[0].shape[0] == 4
    described = json.loads((out / "population.json").read_text())
    assert described["population"]["seeds"] == 2 and described["population"]["lr"] == [0.02, 0.05]
    assert described["members"] == [{"member": 0, "seed": 0, "lr": 0.02}, {"member": 1, "seed": 1, "lr": 0.02},
                                    {"member": 2, "seed": 0, "lr": 0.05}, {"member": 3, "seed": 1, "lr": 0.05}]
    records = _records(out)
    assert records == _records(tmp_path / "straight")  # every entry once, in order, across the resume
    assert {r["member"] for r in records if "loss" in r} == {0, 1, 2, 3}
    assert [r["step"] for r in records if "eval_loss" in r and r["member"] == 2] == [10, 20, 30]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == resumed.summary and [s["lr"] for s in summary["settings"]] == [0.02, 0.05]
    finals = [r["eval_loss"] for r in records if "eval_loss" in r and r["step"] == 30 and r["member"] in (0, 1)]
    assert summary["settings"][0]["final_eval_loss"]["mean"] == pytest.approx(np.mean(finals), rel=1e-12)
    with pytest.raises(ValueError, match="population: expected the population"):
        _run(TINY, out, resume=True, population=Population(seeds=3))


def test_load_checkpoint_gives_a_member_as_its_single_run(tmp_path):
    population = Population(seeds=2, lr=(0.02, 0.05))
    _run(TINY, tmp_path / "run", population=population)
    member = p1.load_checkpoint(tmp_path / "run", member=3)
    assert member["config"] == dataclasses.replace(TINY, seed=1, lr=0.05) and member["member"] == 3
    single = _run(member["config"])
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(member["params"]), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)  # float32
    whole = p1.load_checkpoint(tmp_path / "run")
    assert len(whole["members"]) == 4 and jax.tree.leaves(whole["params"])[0].shape[0] == 4
    with pytest.raises(ValueError, match=r"member: expected 0 to 3 \(the members of .*\), got 4"):
        p1.load_checkpoint(tmp_path / "run", member=4)
    _run(TINY, tmp_path / "single")
    with pytest.raises(ValueError, match="member: expected no member for the single run .*, got 0"):
        p1.load_checkpoint(tmp_path / "single", member=0)


# --------------------------------------------------------------------------- stops per member


def test_a_blown_up_member_is_frozen_and_the_others_go_on(tmp_path):
    cfg = dataclasses.replace(TINY, max_nonfinite=3)
    state = _run(cfg, tmp_path / "run", population=Population(lr=(0.02, 1e38)))
    assert state.step == cfg.steps
    assert state.status[1]["stopped"] == "nonfinite" and state.status[0]["stopped"] is None
    records = _records(tmp_path / "run")
    frozen_at = next(r["step"] for r in records if r.get("stopped") == "nonfinite")
    assert [r["step"] for r in records if r.get("nonfinite")][-3:] == [frozen_at - 2, frozen_at - 1, frozen_at]
    assert not [r for r in records if r.get("member") == 1 and r["step"] > frozen_at]
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(state.params))
    single = _run(dataclasses.replace(cfg, lr=0.02))
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(np.asarray(b)[0], np.asarray(a), rtol=1e-5, atol=1e-6)
    assert state.summary["settings"][1]["stopped_nonfinite"] == 1


def test_every_member_blown_up_stops_with_status_3(tmp_path, capsys):
    status = main(["train", *ARGS, "--lr", "1e38,2e38", "--steps", "40", "--max-nonfinite", "3", "--out",
                   str(tmp_path / "run")])
    assert status == 3
    assert "every member of the population stopped after 3 consecutive non-finite steps" in capsys.readouterr().err


def test_members_at_the_target_are_frozen_and_their_step_summarised(tmp_path):
    cfg = dataclasses.replace(TINY, target_accuracy=0.3, steps=60)
    state = _run(cfg, tmp_path / "run", population=Population(seeds=3))
    reached = [s["target_step"] for s in state.status]
    for k, step in enumerate(reached):  # frozen from that step: the single run stopped there
        if step is None:
            continue
        single = _run(dataclasses.replace(cfg, seed=k, steps=step))
        for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(state.params), strict=True):
            np.testing.assert_allclose(np.asarray(b)[k], np.asarray(a), rtol=1e-5, atol=1e-6)
    target = state.summary["settings"][0]["target"]
    assert target["reached"] == sum(s is not None for s in reached) and target["reached"] + target["never"] == 3
    assert target["reached"] >= 1


def test_the_summary_counts_members_that_never_reached_the_target():
    members = member_configs(TINY, Population(seeds=3))
    records = [{"step": 10, "member": k, "eval_loss": 1.0 + k, "eval_accuracy": 0.5 + 0.1 * k} for k in range(3)]
    records += [{"step": 20, "member": 0, "eval_loss": 0.5, "eval_accuracy": 0.4}]
    status = [{"stopped": None, "nonfinite": 0, "target_step": None},
              {"stopped": "target", "nonfinite": 0, "target_step": 10},
              {"stopped": "target", "nonfinite": 0, "target_step": 10}]
    summary = population_summary(members, records, status, 0.6, 20)["settings"][0]
    finals = np.asarray([0.4, 0.6, 0.7])
    assert summary["final_eval_accuracy"] == {"n": 3, "mean": pytest.approx(finals.mean()),
                                              "std": pytest.approx(finals.std(ddof=1)), "min": 0.4,
                                              "max": pytest.approx(0.7)}
    assert summary["best_eval_accuracy"]["min"] == 0.5 and summary["best_eval_loss"]["min"] == 0.5
    assert summary["target"] == {"reached": 2, "never": 1, "step": {"n": 2, "mean": 10.0, "std": 0.0, "min": 10.0,
                                                                    "max": 10.0}}


def _start(out, *extra):
    env = {**os.environ, "PERCEPTRON1_NO_REEXEC": "1"}
    return subprocess.Popen([sys.executable, "-m", "perceptron1_jax", "train", *ARGS, "--lr", "0.02,0.05",
                             "--seeds", "2", "--steps", "2000", "--log-every", "1", "--eval-every", "500",
                             "--checkpoint-every", "7", "--out", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_step(out, proc, step, timeout=120):
    """Until the 4 members logged ``step`` steps (one line per member per step)."""
    wait_for_metrics(out, proc, lambda text: text.count('"loss"') >= 4 * step, timeout, f"step {step}")


def test_sigterm_and_sigkill_lose_nothing(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_step(out, proc, 20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert "stopped by SIGTERM after step" in proc.stderr.read()
    proc = _start(out, "--resume")
    _wait_for_step(out, proc, 60)
    time.sleep(np.random.default_rng(1).uniform(0, 0.05))
    proc.kill()
    proc.wait(timeout=60)
    cfg = dataclasses.replace(TINY, steps=2000, log_every=1, eval_every=500, checkpoint_every=7)
    population = Population(seeds=2, lr=(0.02, 0.05))
    assert p1.load_checkpoint(out)["step"] < 400
    resumed = _run(dataclasses.replace(cfg, steps=400), out, resume=True, population=population)
    straight = _run(dataclasses.replace(cfg, steps=400), tmp_path / "straight", population=population)
    assert_trees_equal(resumed.params, straight.params)
    assert _records(out) == [r for r in _records(tmp_path / "straight")]


# --------------------------------------------------------------------------- memory, command line


def test_a_population_that_does_not_fit_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(population_step, "available_memory", lambda mesh: 1000)
    with pytest.raises(ValueError, match=r"population: 2 members need \d+\.\d\d GiB for the step \(in all\), the "
                                         r"devices have 0\.00 GiB free"):
        _run(TINY, tmp_path / "run", population=Population(seeds=2))
    assert not list((tmp_path / "run").glob("ckpt_*"))
    monkeypatch.undo()
    status = main(["train", "--task", "adding", "--seq-len", "100", "--hidden", "1024", "--batch-size", "256",
                   "--seeds", "20000", "--out", str(tmp_path / "huge"), "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "population: 20000 members need" in err[0] and "GiB free" in err[0]


@pytest.mark.parametrize("option, value", [("--hidden", "8,16"), ("--cell", "gru,lstm"), ("--batch-size", "8,16"),
                                           ("--optimizer", "adam,sgd"), ("--seq-len", "3,4"), ("--seeds", "2,3")])
def test_a_program_option_given_as_a_list_is_refused(option, value, capsys):
    assert main(["train", option, value, "--seeds", "2", "--steps", "1"] if option != "--seeds" else
                ["train", option, value, "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "a population varies only --seeds, --lr" in err[0]


def test_a_bad_population_option_is_named_as_typed(capsys):
    assert main(["train", *ARGS, "--seeds", "0"]) == 2
    assert capsys.readouterr().err.strip() == "perceptron1: error: --seeds: expected a positive int, got 0"
    assert main(["train", *ARGS, "--lr", "0.1,-2"]) == 2
    assert capsys.readouterr().err.strip() == "perceptron1: error: lr: expected a positive number, got -2.0"


def test_the_command_line_trains_evaluates_and_predicts_with_members(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--lr", "0.02,0.05", "--seeds", "2", "--steps", "20", "--eval-every", "10",
                 "--weight-decay", "0.001", "--gradflow-every", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "population of 4 members" in printed and "summary over seeds" in printed and "lr=0.02 (2 seeds)" in printed
    assert json.loads((out / "summary.json").read_text())["members"] == 4
    flows = [r for r in _records(out) if "gradflow_dh_norm" in r]
    assert sorted((r["step"], r["member"]) for r in flows) == [(s, k) for s in (10, 20) for k in range(4)]
    assert all(len(r["gradflow_dh_norm"]) == 3 for r in flows)
    assert p1.load_checkpoint(out, member=1)["config"].weight_decay == 0.001
    assert main(["eval", str(out), "--member", "2"]) == 0
    assert "step 20" in capsys.readouterr().out
    assert main(["eval", str(out)]) == 2
    assert "--member: expected a member 0 to 3 of the population" in capsys.readouterr().err
    xs = np.asarray(jax.random.normal(jax.random.key(0), (5, 3, 4)))
    np.savez(tmp_path / "new.npz", xs=xs)
    probabilities = []
    for k in range(4):
        assert main(["predict", str(out), "--data", str(tmp_path / "new.npz"), "--member", str(k), "--json"]) == 0
        probabilities.append([json.loads(line)["probabilities"] for line in capsys.readouterr().out.splitlines()])
    assert main(["predict", str(out), "--data", str(tmp_path / "new.npz"), "--ensemble", "--json"]) == 2
    assert "--setting: expected one of 0 to 1 (the population in" in capsys.readouterr().err
    assert main(["predict", str(out), "--data", str(tmp_path / "new.npz"), "--ensemble", "--setting", "1",
                 "--json"]) == 0
    ensemble = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mean = np.mean(probabilities[2:], axis=0)  # setting 1: lr 0.05, members 2 and 3 (as summary.json)
    np.testing.assert_allclose([e["probabilities"] for e in ensemble], mean, rtol=1e-6)
    assert [e["prediction"] for e in ensemble] == mean.argmax(-1).tolist()
    assert [e["index"] for e in ensemble] == list(range(5))
    assert main(["gradflow", "--checkpoint", str(out), "--member", "0", "--png", str(tmp_path / "g.png")]) == 0


def test_a_toml_config_can_hold_the_lists_and_the_seeds(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text("lr = [0.02, 0.05]\nseeds = 2\nsteps = 2\n")
    assert main(["train", *ARGS, "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    members = json.loads((tmp_path / "run" / "population.json").read_text())["members"]
    assert [(m["seed"], m["lr"]) for m in members] == [(0, 0.02), (1, 0.02), (0, 0.05), (1, 0.05)]
    assert main(["train", *ARGS, "--out", str(tmp_path / "run"), "--resume", "--steps", "4"]) == 0  # the saved one
    assert p1.load_checkpoint(tmp_path / "run")["step"] == 4 and "population of 4 members" in capsys.readouterr().out



def test_the_population_benchmark_prints_its_table(tmp_path):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "population.py")
    spec = importlib.util.spec_from_file_location("population_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(module.parse(["--quick", "--out", str(tmp_path)]))
    names = [r["contender"] for r in result["rows"]]
    assert names == ["single run (train's default)", "single run, 1 device", "population of 2",
                     "population of 2, 1 device"]
    assert all(r["member_steps_per_sec"] > 0 for r in result["rows"]) and result["rows"][0]["vs_single"] == 1.0
    table = (tmp_path / "population.md").read_text()
    assert "| member-steps/s |" in table and table.count("| lstm |") == 4
