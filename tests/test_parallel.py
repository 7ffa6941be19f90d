"""Data parallelism: make_mesh, and the explicit BPTT with the batch split over 4 host devices equal
to the one-device call (float64, rtol 1e-10) with lengths, many-to-many, MSE and lean mode; bad
meshes and batch sizes are named. The multi-device part runs in a subprocess, because the host
device count must be set before JAX starts."""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

import perceptron1_jax as p1

SCRIPT = pathlib.Path(__file__).resolve().parent / "scripts" / "sharded_equals_single.py"


def test_make_mesh_has_one_data_axis_over_the_devices():
    mesh = p1.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.shape["data"] == len(jax.local_devices())
    with pytest.raises(ValueError, match="devices: expected at least one device, got none"):
        p1.make_mesh([])


def test_four_devices_equal_one():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK"), result.stdout
