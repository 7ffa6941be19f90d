"""The command's compilation cache: where it lives (option, variables, XDG's cache folder), off, an
unusable folder, and a real run writing its programs there; the start-up benchmark's smoke test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perceptron1_jax.compile_cache import VARIABLE, cache_folder, use_cache
from perceptron1_jax.parallel import available_cores

ROOT = Path(__file__).resolve().parents[1]


def test_the_folder_is_found_in_order(tmp_path):
    home = Path.home() / ".cache" / "perceptron1_jax" / "xla"
    assert cache_folder(None, {}) == home
    assert cache_folder(None, {"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "perceptron1_jax" / "xla"
    env = {"XDG_CACHE_HOME": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax")}
    assert cache_folder(None, env) == tmp_path / "jax"
    env[VARIABLE] = str(tmp_path / "ours")
    assert cache_folder(None, env) == tmp_path / "ours"
    assert cache_folder(str(tmp_path / "option"), env) == tmp_path / "option"
    for off in ("off", "OFF", "none", "0", ""):
        assert cache_folder(off, env) is None and cache_folder(None, {VARIABLE: off}) is None


def test_an_unusable_folder_is_warned_about_and_skipped(tmp_path):
    (tmp_path / "a-file").write_text("")
    said = []
    assert use_cache(tmp_path / "a-file" / "cache", warn=said.append) is None
    assert len(said) == 1 and said[0].startswith(f"compile cache: cannot use {tmp_path / 'a-file' / 'cache'} (")
    assert use_cache(None) is None


@pytest.mark.parametrize("where", ["variable", "xdg", "off"])
def test_a_run_keeps_its_compiled_programs_where_asked(tmp_path, where):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", VARIABLE)}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    expected = {"variable": tmp_path / "mine", "xdg": tmp_path / "xdg" / "perceptron1_jax" / "xla", "off": None}
    if where == "variable":
        env[VARIABLE] = str(tmp_path / "mine")
    args = ["train", "--task", "three_step", "--cell", "gru", "--hidden", "4", "--steps", "2", "--eval-every", "2",
            "--no-progress", "--no-gradcheck", "--out", str(tmp_path / "run")]
    if where == "off":
        args = ["--compile-cache", "off", *args]
    done = subprocess.run([sys.executable, "-m", "perceptron1_jax", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    devices = json.loads((tmp_path / "run" / "devices.json").read_text())  # one host device per core, set in-process
    assert devices["devices"] == devices["available"] == available_cores()
    if expected[where] is None:
        assert not (tmp_path / "xdg" / "perceptron1_jax").exists()  # (matplotlib keeps its own cache there)
    else:
        assert len(list(expected[where].rglob("*"))) >= 3  # the step, the evaluation, the batches


def test_startup_benchmark_quick(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--quick"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| copy, seq-len 20, hidden 32 | cold cache |" in done.stdout and "| warm cache |" in done.stdout
