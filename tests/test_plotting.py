"""Plots: an exactly-zero gradient norm is marked apart and does not squash the log axis; a
regression run's metrics plot has no accuracy panel."""

import json

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from perceptron1_jax.plotting import gradient_flow_axes, plot_metrics  # noqa: E402


def test_zero_gradient_norms_are_marked_and_keep_the_axis_on_the_data():
    fig, ax = plt.subplots()
    underflow = np.array([0.0, 0.0, 1e-30, 1e-20, 1e-10, 1.0])
    gradient_flow_axes(ax, {"vanishing": underflow, "steady": np.full(6, 0.5)}, "t")
    low, high = ax.get_ylim()
    assert 1e-32 < low <= 1e-30 and high >= 1.0  # the axis spans the non-zero values, not 1e-300
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["vanishing", "vanishing: exactly 0 (underflow)", "steady"]
    marker = ax.get_lines()[1]
    np.testing.assert_array_equal(marker.get_xdata(), [5, 4])  # lags of the two zeros
    plt.close(fig)


def test_metrics_plot_of_a_regression_run(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in [{"step": 1, "loss": 2.0}, {"step": 1, "eval_loss": 1.5}]))
    png = plot_metrics(metrics, tmp_path / "m.png")
    assert png.stat().st_size > 0
