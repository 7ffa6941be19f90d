"""Plumbing shared by the experiment scripts: arguments, quiet training runs, tables and plots.

Every experiment is ``python experiments/NAME.py [--quick] [--out DIR] [--seed N]``; results (PNG
plots, a JSON table and a markdown table) go to ``experiments/results/`` unless ``--out`` says
otherwise, and training runs (checkpoints, metrics) to ``<out>/runs/``.
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import re
import shutil
import sys
import sysconfig

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import perceptron1_jax as p1  # noqa: E402
from perceptron1_jax.data import Data  # noqa: E402
from perceptron1_jax.plotting import gradient_flow_axes  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def parse_args(description: str, text: bool = False) -> argparse.Namespace:
    """``--quick``, ``--out``, ``--seed`` (and with ``text``, ``--text FILE``: your own text)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets (the CI smoke test)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="folder for plots and tables")
    parser.add_argument("--seed", type=int, default=0)
    if text:
        parser.add_argument("--text", type=pathlib.Path, help="train on this text file instead")
    return parser.parse_args()


SEEDS = 5  # members per setting of every comparison (2 with --quick)


def seeds_for(quick: bool) -> int:
    return 2 if quick else SEEDS


def train_population(out: pathlib.Path, name: str, seeds: int, vary: dict | None = None, params=None, data=None,
                     **config) -> p1.training.PopulationState:
    """One quiet population (``seeds`` per setting of ``vary``'s lists, e.g. ``{"lr": (1e-3, 3e-3)}``);
    returns its :class:`~perceptron1_jax.training.PopulationState`. The run folder is
    ``out/runs/name``. ``data``: files (``TrainConfig.data``) or a :class:`perceptron1_jax.data.Data`;
    ``params``: the members' initial params stacked (see :func:`stacked`)."""
    if data is not None and not isinstance(data, Data):  # file paths
        config["data"], data = data, None
    cfg = p1.TrainConfig(**config)
    population = p1.Population(seeds=seeds, **(vary or {}))
    shown = {k: f"{len(v)} files" if isinstance(v, tuple) and len(v) > 3 else v for k, v in config.items()}
    print(f"  training {name}: {seeds} seeds" + "".join(f" x {k} {list(v)}" for k, v in (vary or {}).items())
          + ", " + ", ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: no checkpoints or metrics of an older one
    return p1.train(cfg, run_dir, progress=False, log=lambda _: None, check_grads=False, params=params, data=data,
                    population=population)


def stacked(make, members) -> dict:
    """``make(member_config)`` for every member, stacked on a leading member axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *[make(m) for m in members])


def member_records(state, k: int, key: str | None = None) -> list[dict]:
    """Member ``k``'s records (those holding ``key``, if given), in step order."""
    return [r for r in state.history if r.get("member") == k and (key is None or key in r)]


def member_values(state, key: str) -> list[list]:
    """Per member, the values of ``key`` over its records."""
    return [[r[key] for r in member_records(state, k, key)] for k in range(state.size)]


def setting_members(state, **values) -> list[int]:
    """The members whose varied options have ``values`` (e.g. ``lr=1e-3``)."""
    return [k for k, m in enumerate(state.members) if all(getattr(m, n) == v for n, v in values.items())]


def spread(values) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` of the finite numbers in ``values`` (std 0 for one)."""
    found = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if not found.size:
        return float("nan"), float("nan")
    return float(found.mean()), float(found.std(ddof=1)) if found.size > 1 else 0.0


def pm(values, digits: int = 3) -> str:
    """``0.912 ± 0.012`` over ``values`` (a table cell)."""
    mean, std = spread(values)
    return "none" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def reached(state, members: list[int]) -> str:
    """``3/5``: how many of ``members`` reached the target accuracy."""
    return f"{sum(state.status[k]['target_step'] is not None for k in members)}/{len(members)}"


def band(ax, state, key: str, members: list[int], label: str, transform=None, **style) -> None:
    """The mean of ``key`` (through ``transform``, e.g. nats to bits) over ``members`` against the
    step, with a band from the smallest to the largest member (a frozen member holds its last value)."""
    series = []
    for k in members:
        rows = member_records(state, k, key)
        series.append({r["step"]: r[key] for r in rows})
    steps = sorted(set().union(*series))
    if not steps:
        return
    values = np.full((len(series), len(steps)), np.nan)
    for i, points in enumerate(series):
        last = np.nan
        for j, step in enumerate(steps):
            if step in points:
                last = np.nan if points[step] is None else points[step]
            values[i, j] = last
    if transform is not None:
        values = transform(values)
    mean = np.nanmean(values, axis=0)
    line = ax.plot(steps, mean, label=f"{label} (mean of {len(members)})", **style)[0]
    ax.fill_between(steps, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=line.get_color(), alpha=0.2,
                    lw=0)


def train_run(out: pathlib.Path, name: str, params=None, data=None, **config) -> p1.train.__class__:
    """One quiet training run; returns the RunState. The run folder is ``out/runs/name``.
    ``data``: files (``TrainConfig.data``) or a :class:`perceptron1_jax.data.Data` made in Python."""
    if data is not None and not isinstance(data, Data):  # file paths
        config["data"], data = data, None
    cfg = p1.TrainConfig(**config)
    print(f"  training {name}: " + ", ".join(f"{k}={v}" for k, v in config.items()), flush=True)
    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: no checkpoints or metrics of an older one
    return p1.train(cfg, run_dir, progress=False, log=lambda _: None, check_grads=False, params=params, data=data)


def publish(fig, out: pathlib.Path, name: str, rows: list[dict], title: str, notes: str = "") -> list[dict]:
    """Write the experiment's plot and tables; returns ``rows``."""
    save_figure(fig, out, name)
    write_table(out, name, rows, title, notes)
    return rows


def write_table(out: pathlib.Path, name: str, rows: list[dict], title: str, notes: str = "") -> None:
    """``NAME.json`` (the rows) and ``NAME.md`` (a markdown table, then ``notes``) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(strict_json(rows), indent=2, allow_nan=False) + "\n")
    columns = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", notes.rstrip()]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def strict_json(value):
    """``value`` with every NaN or infinite float as None (``null``: strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def stdlib_files() -> list[pathlib.Path]:
    """The top-level ``*.py`` files of this Python's standard library, sorted by name."""
    return sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def stdlib_prose(out: pathlib.Path, chars: int) -> pathlib.Path:
    """English prose on every machine: the docstrings of the standard library, lower-cased, with
    letters and single spaces only (the lessons' alphabet), cut to ``chars`` characters and
    written to ``out/prose_<chars>.txt``."""
    pieces, total = [], 0
    for path in stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    clean = " ".join(re.sub(r"[^a-z]+", " ", doc.lower()).split())
                    pieces.append(clean)
                    total += len(clean) + 1
        if total >= chars:
            break
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"prose_{chars}.txt"
    path.write_text(" ".join(pieces)[:chars])
    return path


def save_figure(fig, out: pathlib.Path, name: str) -> pathlib.Path:
    """Grid and legend on every panel, then ``out/NAME.png``."""
    for ax in fig.axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def flow_axes(ax, profiles: dict, title: str) -> None:
    """``||dL/dh_t||`` against the lag ``T - t`` on a log scale (zeros marked apart)."""
    gradient_flow_axes(ax, profiles, title)


def curves(records: list[dict], key: str) -> tuple[list, list]:
    rows = [r for r in records if key in r]
    return [r["step"] for r in rows], [r[key] for r in rows]


def main_guard(fn) -> None:
    args = parse_args(sys.modules["__main__"].__doc__ or "")
    fn(quick=args.quick, out=args.out, seed=args.seed)
