"""Training, one job per module, each importing only from the floors below it:

- :mod:`~perceptron1_jax.training.config`: :class:`TrainConfig`, its checks, the run's model.
- :mod:`~perceptron1_jax.training.ingredients`: keys, data, minibatches, initial params, optimizer.
- :mod:`~perceptron1_jax.training.step`: the jitted step (explicit or autodiff, truncated,
  non-finite guard, mesh).
- :mod:`~perceptron1_jax.training.evaluation`: whole-split scores and their descriptions.
- :mod:`~perceptron1_jax.training.state`: :class:`RunState`, the stops, signal requests.
- :mod:`~perceptron1_jax.training.run_folder`: out checks, metrics file, checkpoint writes.
- :mod:`~perceptron1_jax.training.resume`: resuming and :func:`load_checkpoint`.
- :mod:`~perceptron1_jax.training.population`: :class:`Population`, its members' grid.
- :mod:`~perceptron1_jax.training.population_step`: the population's step (``vmap`` of the
  run's step, members over devices, memory check).
- :mod:`~perceptron1_jax.training.summary`: a population's statistics over seeds.
- :mod:`~perceptron1_jax.training.session`: a single run's session (:class:`Loop`).
- :mod:`~perceptron1_jax.training.population_loop`: a population's session.
- :mod:`~perceptron1_jax.training.loop`: :func:`train`.
"""

from perceptron1_jax.training.config import TrainConfig, check_config, check_run, config_from_dict, run_spec
from perceptron1_jax.training.evaluation import describe_eval, describe_test, evaluate_split
from perceptron1_jax.training.ingredients import init_run_params, run_data
from perceptron1_jax.training.loop import train
from perceptron1_jax.training.population import Population, member_configs
from perceptron1_jax.training.resume import MismatchError, check_resumable, check_same_data, load_checkpoint
from perceptron1_jax.training.run_folder import check_out_dir
from perceptron1_jax.training.state import (
    NonFiniteStop,
    PopulationState,
    RunState,
    SignalStop,
    TrainingStopped,
    WriteFailed,
)
from perceptron1_jax.training.step import make_train_step, make_truncated_step, run_mesh

__all__ = (
    "MismatchError",
    "NonFiniteStop",
    "Population",
    "PopulationState",
    "RunState",
    "SignalStop",
    "TrainConfig",
    "TrainingStopped",
    "WriteFailed",
    "check_config",
    "check_out_dir",
    "check_resumable",
    "check_run",
    "check_same_data",
    "config_from_dict",
    "describe_eval",
    "describe_test",
    "evaluate_split",
    "init_run_params",
    "load_checkpoint",
    "make_train_step",
    "make_truncated_step",
    "member_configs",
    "run_data",
    "run_mesh",
    "run_spec",
    "train",
)
