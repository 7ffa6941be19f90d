"""The accelerator check (benchmarks/device_check.py) runs end to end on a CPU with --quick: the
accelerator-branch tests, the float64 gradient check and the benchmark rows, in one report."""

import importlib.util
import pathlib

import pytest

pytestmark = pytest.mark.standard_promotion  # the benchmark drives optax

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "device_check.py"


def test_the_device_check_writes_its_report_on_a_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--quick", "--out", str(tmp_path / "report.md")]).read_text()
    assert "## Accelerator-branch tests: passed" in report
    assert "## Explicit BPTT vs jax.grad on the device (float64): passed" in report
    assert "(PASS at rtol 1e-6)" in report
    assert "## Loop forms: wavefront and fused directions: passed" in report and "| gru | 2 |" in report
    assert report.count("speed-up of the fused form") == 3
    rows = [line for line in report.splitlines() if line.startswith("| B4 I3 H8 T6 |")]
    assert {row.split(" | ")[1] for row in rows} == {"elman", "lstm", "gru", "2x bi-lstm"}
    assert any("jax.grad" in row for row in rows) and all(" | 1.00 | " in row for row in rows
                                                          if "| explicit BPTT |" in row)
