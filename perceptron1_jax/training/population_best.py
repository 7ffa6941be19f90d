"""A population's model selection and test split: each member's best checkpoint (the lowest
evaluation loss of that member, kept in ``best.msgpack`` with every member's own best stacked)
and, at the end, the test split scored once by each member's best checkpoint and by each
setting's ensemble (the mean of its seeds' probabilities)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from perceptron1_jax import checkpoint
from perceptron1_jax.training.evaluation import ensemble_accuracy, evaluate_members, json_scalar
from perceptron1_jax.training.population import settings
from perceptron1_jax.training.population_step import PopulationData, first_members, member_of, member_split
from perceptron1_jax.training.run_folder import RunFolder
from perceptron1_jax.training.state import PopulationState


@dataclasses.dataclass
class BestMembers:
    """Each member's best ``(params, opt_state)`` on the host, stacked over the real members
    (None before the first evaluation); each member's ``best_step`` and ``best_loss`` live in its
    status, which checkpoints carry."""

    stacked: tuple | None = None

    @classmethod
    def start(cls, keeps: bool, folder: RunFolder, restore, resumed) -> BestMembers | None:
        """None when the run keeps no best; else empty, or for a ``resumed`` run (a truthy value:
        what it resumed from) the one in its
        folder's ``best.msgpack`` (``restore(raw)`` rebuilds a raw checkpoint's stacked params and
        optax state)."""
        if not keeps:
            return None
        path = None if folder.out is None else folder.out / checkpoint.BEST
        if not resumed or path is None or not path.exists():
            return cls()
        return cls(jax.device_get(restore(checkpoint.read_checkpoint(path))))

    def update(self, state: PopulationState, losses: dict, folder: RunFolder) -> list[int]:
        """Record the members whose evaluation loss (``{member: loss or None}``) is below their
        best so far; write ``best.msgpack`` when any is. Returns those members."""
        improved = [k for k, loss in losses.items() if loss is not None and
                    (state.status[k].get("best_loss") is None or loss < state.status[k]["best_loss"])]
        if not improved:
            return improved
        current = jax.device_get(first_members((state.params, state.opt_state), state.size))
        if self.stacked is None:
            self.stacked = jax.tree.map(np.array, current)
        else:
            rows = np.asarray(improved)

            def put(best, now):
                best[rows] = now[rows]
                return best

            self.stacked = jax.tree.map(put, self.stacked, current)
        for k in improved:
            state.status[k]["best_step"], state.status[k]["best_loss"] = state.step, losses[k]
        folder.write_best(state, *self.stacked, state.population_parts(), {"step": state.step, "members": improved})
        return improved

    def tested_params(self, state: PopulationState):
        """Stacked params of the real members: each member's best, or its last when it has none."""
        final = jax.device_get(first_members(state.params, state.size))
        if self.stacked is None:
            return final
        chosen = np.asarray([state.status[k].get("best_step") is not None for k in range(state.size)])

        def pick(best, last):
            return np.where(chosen.reshape((-1,) + (1,) * (best.ndim - 1)), best, last)

        return jax.tree.map(pick, self.stacked[0], final)


def test_members(state: PopulationState, data: PopulationData, best: BestMembers, folder: RunFolder) -> dict:
    """Score the test split once with each member's best checkpoint (``metrics.jsonl`` entries
    with ``member``, ``test_loss``, ``test_accuracy``, ``test_checkpoint_step``); returns the
    accuracy of each setting's ensemble ``{first member of the setting: accuracy}`` (classifiers)."""
    params = best.tested_params(state)
    scores = evaluate_members(params, data.test, data.which, state.spec)
    for k in range(state.size):
        step = state.status[k].get("best_step")
        entry = {"step": state.step, "member": k, "test_loss": json_scalar(scores["loss"][k]),
                 "test_checkpoint_step": state.step if step is None else step}
        if "accuracy" in scores:
            entry["test_accuracy"] = json_scalar(scores["accuracy"][k])
        folder.record(state, entry)
    if not state.info.classifier:
        return {}
    return {indices[0]: ensemble_accuracy([(member_of(params, k), member_split(data, k).test) for k in indices],
                                          state.spec)
            for _, indices in settings(state.members)}
