"""What a run is made of, each a pure function of its config: the PRNG keys, the data on the
device, the minibatch of each step, the initial parameters and the optimizer.

Everything random comes from ``cfg.seed``: the minibatch of step ``s`` is a pure function of
``(seed, s)`` (a permutation per epoch from ``fold_in(key, epoch)``) and so are its dropout masks,
so a run resumed from a checkpoint at step ``k`` replays exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from perceptron1_jax.data import Data, load_data
from perceptron1_jax.model import init_model
from perceptron1_jax.optim import make_optimizer
from perceptron1_jax.spec import ModelSpec
from perceptron1_jax.tasks import Dataset
from perceptron1_jax.training.config import TrainConfig, task_info


def run_keys(cfg: TrainConfig):
    """``(run key, init, train data, eval data, shuffle)`` keys, all from ``cfg.seed``."""
    return seed_keys(cfg.seed)


def seed_keys(seed):
    """:func:`run_keys` of the run with seed ``seed`` (an int, or a traced one: a population member's)."""
    key = jax.random.key(seed)
    return (key, *jax.random.split(key, 4))


def dropout_key_of(cfg: TrainConfig, step: int):
    """The key of step ``step`` (a pure function of ``(seed, step)``): its dropout masks, or UORO's
    random signs (``gradient="uoro"``, which has no dropout); None without either."""
    if not cfg.dropout and cfg.gradient != "uoro":
        return None
    return dropout_key_at(run_keys(cfg)[0], step)


def dropout_key_at(run_key, step):
    """The dropout key of step ``step`` of the run whose key is ``run_key`` (traceable)."""
    return jax.random.fold_in(jax.random.fold_in(run_key, 0xD50), step)


def task_datasets(cfg: TrainConfig, k_train, k_eval) -> tuple[Dataset, Dataset]:
    """The training and evaluation splits of ``cfg``'s built-in task, drawn from the two keys (a
    stream run's training split: the task's text in order)."""
    spec, dtype = cfg.task_spec, jnp.dtype(cfg.dtype)
    train = spec.make_stream(cfg.time) if cfg.stream else spec.make(k_train, cfg.num_train, cfg.time, dtype)
    return (Dataset(*train),
            Dataset(*(spec.make_eval or spec.make)(k_eval, cfg.num_eval, cfg.time, dtype)))


def on_device(data: Data, dtype) -> Data:
    """``data`` as device arrays: float inputs and targets in ``dtype``, ids, labels and lengths int32,
    resets bool."""

    def put(array):
        if array is None:
            return None
        array = np.asarray(array)
        if array.dtype == np.bool_:
            return jnp.asarray(array)
        return jnp.asarray(array, dtype if np.issubdtype(array.dtype, np.floating) else jnp.int32)

    return Data(Dataset(*map(put, data.train)), Dataset(*map(put, data.eval)), data.info,
                None if data.test is None else Dataset(*map(put, data.test)))


def run_data(cfg: TrainConfig) -> Data:
    """The data of ``cfg``'s run: the task's splits drawn from the seed, or its files loaded
    (:func:`perceptron1_jax.data.load_data`: with ``cfg.test``, the test split; standardized when
    ``cfg.standardizes``), on the device in ``cfg.dtype``."""
    if cfg.task is not None:
        _, _, k_train, k_eval, _ = run_keys(cfg)
        return Data(*task_datasets(cfg, k_train, k_eval), task_info(cfg.task_spec))
    if cfg.data is None and cfg.classes is None:
        raise ValueError("data: this run trained on data given in Python (train(..., data=...)); give it again")
    loaded = load_data(cfg.data, cfg.classes, tokens=cfg.tokens, seq_len=cfg.seq_len, val_fraction=cfg.val_fraction,
                       seed=cfg.seed, max_vocab=cfg.max_vocab, missing=cfg.missing, test=cfg.test,
                       standardize=cfg.standardizes)
    return on_device(loaded, jnp.dtype(cfg.dtype))


@partial(jax.jit, static_argnames=("batch_size",))
def get_batch(data: Dataset, shuffle_key, step, batch_size: int):
    """Minibatch of step ``step``: epoch ``e = step // (n // batch_size)`` walks the permutation
    drawn from ``fold_in(shuffle_key, e)`` (the tail of ``n % batch_size`` examples is dropped)."""
    index = batch_index(data.labels.shape[0], shuffle_key, step, batch_size)
    return tuple(None if a is None else a[index] for a in data)  # (xs, labels, lengths, resets)


def batch_index(n: int, shuffle_key, step, batch_size: int):
    """The ``(batch_size,)`` example indices of step ``step`` among ``n`` (see :func:`get_batch`)."""
    per_epoch = n // batch_size
    epoch, position = step // per_epoch, step % per_epoch
    order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
    return jax.lax.dynamic_slice(order, (position * batch_size,), (batch_size,))


@partial(jax.jit, static_argnames=("batch_size",))
def stream_batch(data: Dataset, step, batch_size: int):
    """Minibatch of step ``step`` of a stream run (``TrainConfig(stream=True)``): lane ``b`` reads
    the windows of ``data`` in order, one per step (see :func:`stream_index`), with a reset where it
    starts (over)."""
    index, start = stream_index(data.labels.shape[0], step, batch_size)
    return with_stream_resets(tuple(None if a is None else a[index] for a in data), start)


def stream_index(n: int, step, batch_size: int):
    """``(index, start)`` of step ``step`` of a stream over ``n`` windows: lane ``b`` reads windows
    ``[b W, (b + 1) W)`` in order, ``W = n // batch_size``, and starts over after the last (the
    tail of ``n % batch_size`` windows is not read); ``index: (batch_size,)`` the window of each
    lane, ``start`` whether the lanes start (over) at this step."""
    per_lane = n // batch_size
    position = step % per_lane
    return jnp.arange(batch_size) * per_lane + position, position == 0


def with_stream_resets(batch: tuple, start) -> tuple:
    """``(xs, labels, lengths, resets)`` of ``batch`` with a reset at every lane's first step when
    ``start``: the state (and the influence) start again where a lane starts over its text."""
    xs, labels, lengths, resets = batch
    first = jnp.zeros(labels.shape[:2], bool).at[:, 0].set(start)
    return xs, labels, lengths, first if resets is None else resets | first


def init_run_params(key, cfg: TrainConfig, spec: ModelSpec | None = None):
    """Fresh params of the run's model (:func:`perceptron1_jax.init_model` of ``spec``, by default
    ``cfg.model_spec``)."""
    return init_model(key, spec or cfg.model_spec, jnp.dtype(cfg.dtype))


def initial_params(cfg: TrainConfig, spec: ModelSpec, params=None):
    """The seed's initial parameters of the run, or ``params`` in their place after checking that
    they have the structure, shapes and dtypes of those (a ``ValueError`` otherwise)."""
    template = init_run_params(run_keys(cfg)[1], cfg, spec)
    if params is None:
        return template
    if jax.tree.structure(params) != jax.tree.structure(template) or any(
        a.shape != b.shape or a.dtype != b.dtype for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(template))
    ):
        raise ValueError(f"params: expected the structure, shapes and dtypes of init_model for {spec}, "
                         f"got {jax.tree.map(lambda a: (a.shape, str(a.dtype)), params)}")
    return params


def run_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """The optax chain of ``cfg``: optimizer, clipping, weight decay and learning-rate schedule (its
    rates may be traced scalars: a population member's)."""
    return make_optimizer(
        cfg.optimizer, cfg.lr, momentum=cfg.momentum, clip=cfg.clip, clip_value=cfg.clip_value,
        schedule=cfg.schedule, total_steps=cfg.steps, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
    )
