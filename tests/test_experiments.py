"""Smoke test: every experiment runs end to end with --quick and writes its plot and tables.

The experiments are run in-process (their ``main(quick=True, out=...)``), which shares JAX's
compilation caches between them; ``bptt_vs_autodiff`` runs last, on the final models the others
wrote, and fails if the explicit BPTT disagrees with jax.grad on any of them.
"""

import importlib
import json
import pathlib
import sys

import jax
import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"
NAMES = ["vanishing_gradients", "clipping", "long_range", "truncation", "optimizers", "flax_nnx", "char_model",
         "word_model", "sentiment", "bidirectional", "stdlib_chars", "time_series_classification", "min_rnns",
         "online_learning", "recurrent_ppo", "stream_learning", "bptt_vs_autodiff"]

pytestmark = pytest.mark.standard_promotion  # the experiments train with optax


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.parametrize("name", NAMES)
def test_experiment_quick(name, out, monkeypatch):
    if name == "recurrent_ppo":
        pytest.importorskip("gymnax")
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    module = importlib.import_module(name)
    rows = module.main(quick=True, out=out)
    assert rows
    strict = json.loads((out / f"{name}.json").read_text(), parse_constant=pytest.fail)  # no NaN or Infinity
    assert strict == json.loads(json.dumps(rows).replace("NaN", "null"))
    assert (out / f"{name}.md").read_text().startswith("### ")
    if name != "bptt_vs_autodiff":
        assert (out / f"{name}.png").stat().st_size > 0
    else:
        assert len(rows) >= 5 and max(r["max_relative_error"] for r in rows) < 1e-6
    assert not jax.config.read("jax_enable_x64")
    sys.modules.pop(name, None)
