"""Export: a run's params as .npz ('/'-joined names) and as an orbax checkpoint, each opened by
numpy or orbax alone (no perceptron1_jax in the process), and read back by p1.load_params into
the model's layout; the checkpoint chosen (newest, --step, --best, a population's member); bad
requests refused in one line with exit status 2."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import perceptron1_jax as p1
from perceptron1_jax.cli import main
from perceptron1_jax.export import flat_params, nested_params
from perceptron1_jax.runs import load_run

pytestmark = pytest.mark.standard_promotion  # training drives optax

FAST = ["--batch-size", "8", "--eval-every", "2", "--log-every", "2", "--checkpoint-every", "2", "--no-progress",
        "--no-gradcheck"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A 2-layer bidirectional token model trained 4 steps, checkpoints at 2 and 4 and a best one."""
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["train", "--task", "parity", "--layers", "gru:6,lstm:5", "--bidirectional", "--steps", "4",
                 "--keep-best", "--out", str(out), *FAST]) == 0
    return out


def assert_same_params(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_flat_names_join_the_path_and_nest_back_with_lists_for_layers(run_folder):
    params = load_run(run_folder).params
    flat = flat_params(params)
    assert {"layers/0/fwd/W_x", "layers/0/bwd/b_h", "layers/1/fwd/W_h", "layers/1/bwd/b", "head/W",
            "head/b"} <= set(flat)
    assert isinstance(nested_params(flat)["layers"], list)
    assert_same_params(nested_params(flat), params)


def test_npz_opens_with_numpy_alone_and_loads_back(run_folder, tmp_path, capsys):
    to = tmp_path / "params.npz"
    assert main(["export", str(run_folder), "--to", str(to)]) == 0
    assert "(step 4)" in capsys.readouterr().out
    run = load_run(run_folder)
    assert_same_params(p1.load_params(to), run.params)
    with np.load(to) as arrays:
        np.testing.assert_array_equal(arrays["layers/1/bwd/W_x"], np.asarray(run.params["layers"][1]["bwd"]["W_x"]))


def test_orbax_opens_with_orbax_alone_and_loads_back(run_folder, tmp_path):
    to = tmp_path / "orbax"
    assert main(["export", str(run_folder), "--to", str(to), "--format", "orbax", "--step", "2"]) == 0
    npz = tmp_path / "step2.npz"
    assert main(["export", str(run_folder), "--to", str(npz), "--step", "2"]) == 0
    step2 = load_run(run_folder / "ckpt_00000002.msgpack").params
    assert_same_params(p1.load_params(to), step2)
    # Each file opened in a process that never imports perceptron1_jax.
    script = f"""
import json, sys
import numpy as np
import orbax.checkpoint as ocp
tree = ocp.PyTreeCheckpointer().restore({str(to)!r})
arrays = np.load({str(npz)!r})
same = all(np.array_equal(tree["layers"][int(k.split("/")[1])][k.split("/")[2]][k.split("/")[3]], arrays[k])
           for k in arrays.files if k.startswith("layers/"))
print(json.dumps({{"same": same, "head": sorted(tree["head"]), "p1": "perceptron1_jax" in sys.modules,
                   "layers": len(tree["layers"])}}))
"""
    found = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[-1])
    assert found == {"same": True, "head": ["W", "b"], "p1": False, "layers": 2}


def test_best_is_the_best_checkpoint(run_folder, tmp_path):
    to = tmp_path / "best.npz"
    assert main(["export", str(run_folder), "--to", str(to), "--best"]) == 0
    assert_same_params(p1.load_params(to), load_run(run_folder / "best.msgpack").params)


@pytest.mark.parametrize("args, message", [
    (["--step", "3"], "--step: expected a step with a checkpoint in"),
    (["--format", "npz"], "--to: expected a path that does not exist yet"),
    (["--to-other"], "unrecognized arguments"),
])
def test_bad_requests_are_one_line_and_status_2(run_folder, tmp_path, capsys, args, message):
    to = tmp_path / "x.npz"
    if "--format" in args:
        to.write_bytes(b"already here")
    assert main(["export", str(run_folder), "--to", str(to), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("perceptron1: error: ") and message in err, err
    if "--format" in args:
        assert to.read_bytes() == b"already here"  # nothing overwritten


def test_an_npz_needs_its_suffix_and_best_needs_a_best(tmp_path, capsys, run_folder):
    assert main(["export", str(run_folder), "--to", str(tmp_path / "params.bin")]) == 2
    assert "--to: expected a file name ending in .npz" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "ckpt_00000004.msgpack").write_bytes((run_folder / "ckpt_00000004.msgpack").read_bytes())
    assert main(["export", str(plain), "--to", str(tmp_path / "b.npz"), "--best"]) == 2
    assert "--best: expected a best checkpoint in" in capsys.readouterr().err
    with pytest.raises(ValueError, match="path: expected an .npz file or an orbax folder"):
        p1.load_params(tmp_path / "missing.npz")


def test_float64_params_need_64_bit_mode_to_load(tmp_path):
    from conftest import enable_x64

    out, to = tmp_path / "wide", tmp_path / "wide.npz"
    with enable_x64():  # the command turns 64-bit mode on for its float64 run; restored after
        assert main(["train", "--task", "copy", "--seq-len", "4", "--hidden", "4", "--steps", "2", "--dtype",
                     "float64", "--out", str(out), *FAST]) == 0
        assert main(["export", str(out), "--to", str(to)]) == 0
        assert p1.load_params(to)["head"]["W"].dtype == np.float64
    with np.load(to) as arrays:
        assert arrays["head/W"].dtype == np.float64
    with pytest.raises(ValueError, match="path: .* holds float64 params .* 64-bit mode"):
        p1.load_params(to)


def test_a_population_exports_stacked_members_or_one(tmp_path):
    out = tmp_path / "pop"
    assert main(["train", "--task", "copy", "--seq-len", "4", "--hidden", "4", "--steps", "2", "--seeds", "2",
                 "--out", str(out), *FAST]) == 0
    stacked, one = tmp_path / "all.npz", tmp_path / "one.npz"
    assert main(["export", str(out), "--to", str(stacked)]) == 0
    assert main(["export", str(out), "--to", str(one), "--member", "1"]) == 0
    member = load_run(out, member=1).params
    assert_same_params(p1.load_params(one), member)
    with np.load(stacked) as arrays:
        assert arrays["head/W"].shape == (2, *member["head"]["W"].shape)
        np.testing.assert_array_equal(arrays["head/W"][1], np.asarray(member["head"]["W"]))
