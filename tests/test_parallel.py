"""Data parallelism: make_mesh; the explicit BPTT and the train step with the batch split over 4
host devices equal to one device (float64, rtol 1e-10) with lengths, many-to-many, MSE and lean
mode; the directions of bidirectional layers placed on 2 devices equal to one device, and the
default placement rule; checkpoints across device counts; bad meshes and batch sizes named; a run over two processes
(gloo on the loopback interface) ending with the parameters of a one-process run. The multi-device
parts run in subprocesses, because the device count must be set before JAX starts."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import pytest

import perceptron1_jax as p1
from perceptron1_jax import parallel
from perceptron1_jax.diagnostics import max_relative_error

SCRIPTS = pathlib.Path(__file__).resolve().parent / "scripts"
FOUR_DEVICES = {**os.environ, "JAX_PLATFORMS": "cpu",  # the suite's own XLA flags (conftest.py) and 4 devices
                "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()}
TWO_DEVICES = {**FOUR_DEVICES, "XLA_FLAGS": FOUR_DEVICES["XLA_FLAGS"].replace("count=4", "count=2")}


def test_make_mesh_has_one_data_axis_over_the_devices():
    mesh = p1.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.shape["data"] == len(jax.local_devices())
    with pytest.raises(ValueError, match="devices: expected at least one device, got none"):
        p1.make_mesh([])


def test_host_device_env_adds_a_count_unless_one_is_set():
    cores = parallel.available_cores()
    assert parallel.host_device_env({})["XLA_FLAGS"] == f"--xla_force_host_platform_device_count={cores}"
    assert parallel.host_device_env({"XLA_FLAGS": "--xla_dump_to=x"})["XLA_FLAGS"] == (
        f"--xla_dump_to=x --xla_force_host_platform_device_count={cores}")
    mine = {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    assert parallel.host_device_env(mine) == mine


def test_setup_errors_name_the_argument():
    with pytest.raises(ValueError, match="count: expected a positive int .* got 0"):
        parallel.use_cpu_devices(0)
    with pytest.raises(RuntimeError, match="use_cpu_devices: call it before JAX runs anything"):
        jax.numpy.zeros(1).block_until_ready()
        parallel.use_cpu_devices(2)
    with pytest.raises(ValueError, match=r"process_id: expected 0 to 1 \(num_processes 2\), got 2"):
        parallel.initialize_distributed("127.0.0.1:1", 2, 2)


@pytest.mark.parametrize("script", ["sharded_equals_single.py", "train_on_devices.py", "device_choice.py",
                                    "directions_equal_single.py"])
def test_several_devices_equal_one(script):
    env = FOUR_DEVICES if script != "directions_equal_single.py" else TWO_DEVICES
    result = subprocess.run([sys.executable, str(SCRIPTS / script)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK"), result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.standard_promotion
def test_two_processes_train_like_one(tmp_path, x64):
    out, port = tmp_path / "run", _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, str(SCRIPTS / "two_processes.py"), str(port), str(i), str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "process 1: step 6, dropout run step 2" in outputs[1] and "step 3:" not in outputs[1]  # 1 is quiet
    sys.path.insert(0, str(SCRIPTS))
    try:
        from two_process_run import CONFIG, DATA
    finally:
        sys.path.remove(str(SCRIPTS))
    one = p1.train(CONFIG, None, data=DATA, progress=False, log=lambda message: None, check_grads=False)
    saved = p1.load_checkpoint(out)
    assert saved["step"] == 6 and max_relative_error(saved["params"], one.params) < 1e-10
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 3, 6, 6]  # one writer: each log and eval entry once
