"""Each member of a population against its own single run, in float64 after 50 steps, on every
device this process has (the population's members split over them, the single runs' batches
split over them): prints ``{case: worst relative difference}`` as JSON.

Run by tests/test_population.py in this process (one device) and in a subprocess with two."""

import dataclasses
import json

import jax
import numpy as np

import perceptron1_jax as p1
from perceptron1_jax.parallel import make_mesh

BASE = p1.TrainConfig(task="adding", cell="lstm", hidden=6, seq_len=8, batch_size=8, num_train=64, num_eval=16,
                      steps=50, eval_every=25, log_every=25, checkpoint_every=1000, target_accuracy=0.0,
                      dtype="float64")
CASES = {
    "2 seeds x 2 learning rates": (BASE, p1.Population(seeds=2, lr=(1e-2, 3e-2))),
    "layered, dropout": (dataclasses.replace(BASE, hidden=32, layers="lstm:6,gru:5", dropout=0.25, optimizer="sgd",
                                             lr=0.1),
                         p1.Population(seeds=2, dropout=(0.0, 0.25), momentum=(0.0, 0.9))),
    "truncated": (dataclasses.replace(BASE, cell="gru", tbptt_k1=8, tbptt_k2=3, clip=1.0),
                  p1.Population(seeds=2, clip=(0.5, 1.0), weight_decay=(0.0, 0.01))),
    "one member": (dataclasses.replace(BASE, dropout=0.2, hidden=32, layers="gru:6"), p1.Population(seeds=1)),
}


def quiet(cfg, **kwargs):
    return p1.train(cfg, None, progress=False, log=lambda _: None, check_grads=False, **kwargs)


COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def collectives_between_members() -> list[str]:
    """The collective operations in the compiled step of the first case's population (members
    split over every device): there should be none."""
    from perceptron1_jax.training.population_loop import start_population_loop

    cfg, population = CASES["2 seeds x 2 learning rates"]
    loop = start_population_loop(cfg, population, None, resume=False, progress=False, log=lambda _: None,
                                 check_grads=False, data=None, mesh=make_mesh(jax.devices()))
    text = loop.step_fn.as_text()
    loop.close()
    return [name for name in COLLECTIVES if name in text]


def worst_differences() -> dict:
    """Needs float64 on (``jax_enable_x64``)."""
    mesh = make_mesh(jax.devices())
    worst = {}
    for name, (cfg, population) in CASES.items():
        state = quiet(cfg, population=population, mesh=mesh)
        assert state.step == cfg.steps
        errors = []
        for k, member in enumerate(state.members):
            single = quiet(member, mesh=None if member.tbptt_k1 is not None else mesh)
            for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(state.params), strict=True):
                a, b = np.asarray(a), np.asarray(b)[k]
                errors.append(float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12))))
        worst[name] = max(errors)
    return worst


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    print(json.dumps({**worst_differences(), "collectives": collectives_between_members()}))
