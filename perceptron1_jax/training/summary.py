"""A population's summary over seeds (``summary.json``): per setting of the varied options, the
mean, standard deviation, min and max of its members' final and best evaluations and of the step
at which they first reached the target accuracy.

Statistics are over the members of the setting that have the value: ``n`` says how many; the
standard deviation is the sample one (``ddof = 1``; 0 for one member). A member that never
reached the target is not dropped from the count: ``target.reached`` and ``target.never`` add up
to the setting's members, and ``target.step`` is over those that reached it.
"""

from __future__ import annotations

import numpy as np

from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.population import settings, varied_names

SCORES = ("eval_loss", "eval_accuracy")
TEST_SCORES = ("test_loss", "test_accuracy")  # a run with a test split: each member's best checkpoint's


def stats(values) -> dict:
    """``{"n", "mean", "std", "min", "max"}`` of the numbers in ``values`` (None ignored)."""
    found = np.asarray([v for v in values if v is not None], np.float64)
    if not found.size:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": int(found.size), "mean": float(found.mean()), "std": float(found.std(ddof=1)) if found.size > 1
            else 0.0, "min": float(found.min()), "max": float(found.max())}


def member_scores(records: list[dict], k: int) -> dict:
    """Member ``k``'s final and best evaluation scores (and its test scores) from the run's records."""
    evals = [r for r in records if r.get("member") == k and "eval_loss" in r]
    tests = [r for r in records if r.get("member") == k and "test_loss" in r]
    scores = {name: tests[-1].get(name) if tests else None for name in TEST_SCORES}
    for name in SCORES:
        values = [r.get(name) for r in evals if r.get(name) is not None]
        scores[f"final_{name}"] = evals[-1].get(name) if evals else None
        if values:
            scores[f"best_{name}"] = min(values) if name == "eval_loss" else max(values)
        else:
            scores[f"best_{name}"] = None
    return scores


def population_summary(members: tuple[TrainConfig, ...], records: list[dict], status: list[dict], target: float,
                       steps: int, ensembles: dict | None = None) -> dict:
    """The summary of a population trained to step ``steps`` (see the module's docstring);
    ``target`` 0 for no target accuracy; ``ensembles``: the test accuracy of each setting's
    ensemble, by the setting's first member (``ensemble_test_accuracy``)."""
    per_member = [member_scores(records, k) for k in range(len(members))]
    out = {"members": len(members), "varied": list(varied_names(members)), "steps": steps,
           "target_accuracy": target or None, "settings": []}
    for values, indices in settings(members):
        entry = {**values, "seeds": [members[k].seed for k in indices], "member_ids": indices}
        for name in ("final_eval_loss", "best_eval_loss", "final_eval_accuracy", "best_eval_accuracy", *TEST_SCORES):
            if any(per_member[k][name] is not None for k in indices) or name.endswith("eval_loss"):
                entry[name] = stats(per_member[k][name] for k in indices)
        if ensembles and indices[0] in ensembles:
            entry["ensemble_test_accuracy"] = ensembles[indices[0]]
        entry["stopped_nonfinite"] = sum(status[k]["stopped"] == "nonfinite" for k in indices)
        if target:
            steps_reached = [status[k]["target_step"] for k in indices if status[k]["target_step"] is not None]
            entry["target"] = {"reached": len(steps_reached), "never": len(indices) - len(steps_reached),
                               "step": stats(steps_reached)}
        out["settings"].append(entry)
    return out


def describe_summary(summary: dict) -> list[str]:
    """One line per setting: ``lr=0.01 (5 seeds): final eval accuracy 0.912 ± 0.012 [0.89, 0.93], ...``."""
    varied = ", ".join(summary["varied"]) or "the seed only"
    lines = [f"summary over seeds ({summary['members']} members, varied: {varied}):"]
    for entry in summary["settings"]:
        name = ", ".join(f"{k}={entry[k]:g}" for k in summary["varied"]) or "all"
        parts = []
        for key in ("final_eval_accuracy", "best_eval_accuracy", "final_eval_loss", "test_accuracy", "test_loss"):
            if key in entry and entry[key]["n"]:
                s = entry[key]
                parts.append(f"{key.replace('_', ' ')} {s['mean']:.4g} ± {s['std']:.2g} "
                             f"[{s['min']:.4g}, {s['max']:.4g}]")
        if "ensemble_test_accuracy" in entry:
            parts.append(f"ensemble test accuracy {entry['ensemble_test_accuracy']:.4g}")
        if "target" in entry:
            t = entry["target"]
            when = f" at step {t['step']['mean']:.0f} ± {t['step']['std']:.0f}" if t["reached"] else ""
            parts.append(f"target reached by {t['reached']} of {t['reached'] + t['never']}{when}")
        if entry["stopped_nonfinite"]:
            parts.append(f"{entry['stopped_nonfinite']} stopped (non-finite)")
        lines.append(f"  {name} ({len(entry['seeds'])} seeds): " + "; ".join(parts))
    return lines
