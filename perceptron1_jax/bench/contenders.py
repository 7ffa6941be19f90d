"""What the benchmark times: the sizes, the model, and one contender per way of taking a training
step (forward + loss + backward + Adam) on the same data: our explicit BPTT (sequential, lean,
windowed, over a mesh), ``jax.grad``, Flax ``nn.RNN`` and PyTorch's fused CPU RNNs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from perceptron1_jax import losses
from perceptron1_jax.bptt import explicit_model, explicit_value_and_grad, make_value_and_grad
from perceptron1_jax.lean import default_segment
from perceptron1_jax.model import (
    as_model_params,
    from_model_params,
    init_model,
    init_params,
    loss_and_forward,
    spec_of_params,
)
from perceptron1_jax.parallel import data_parallel, direction_mesh, direction_parallel, replicate, shard_batch
from perceptron1_jax.scan import WINDOW
from perceptron1_jax.spec import LayerSpec, ModelSpec

GATES = {"elman": 1, "lstm": 4, "gru": 3}


@dataclasses.dataclass(frozen=True)
class Size:
    batch: int
    input: int
    hidden: int
    time: int
    classes: int = 10

    def label(self) -> str:
        return f"B{self.batch} I{self.input} H{self.hidden} T{self.time}"


MODEL_CELL = "2x bi-lstm"


def bench_spec(size: Size, depth: int = 2) -> ModelSpec:
    """The layered model of the ``--model`` rows: ``depth`` bidirectional LSTM layers, many-to-one."""
    return ModelSpec([LayerSpec("lstm", size.hidden, True)] * depth, size.classes, input_size=size.input)


def step_flops(cell: str, size: Size) -> float:
    """Matrix-product FLOPs of one training step: the forward products (input and recurrent
    projections, readout) and twice as many in the backward (activation and weight gradients).
    ``cell`` :data:`MODEL_CELL` counts every direction of every layer of :func:`bench_spec`."""
    if cell == MODEL_CELL:
        spec = bench_spec(size)
        recurrent = sum(2 * size.batch * size.time * (spec.layer_input_size(k) + size.hidden) * 4 * size.hidden
                        * len(layer.directions) for k, layer in enumerate(spec.layers))
        return 3.0 * (recurrent + 2 * size.batch * spec.head_features * size.classes)
    gates = GATES[cell] * size.hidden
    recurrent = 2 * size.batch * size.time * (size.input + size.hidden) * gates
    forward = recurrent + 2 * size.batch * size.hidden * size.classes
    return 3.0 * forward


@dataclasses.dataclass
class Contender:
    name: str
    run: Callable[[], None]  # one training step, blocking until done
    temp_bytes: float = float("nan")  # compiled temporary memory (JAX only)


def _problem(size: Size, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((size.batch, size.time, size.input)).astype(np.float32)
    labels = rng.integers(0, size.classes, size.batch).astype(np.int32)
    return xs, labels


def _jax_contender(name, value_and_grad, params, xs, labels, mesh=None) -> Contender:
    """A jitted Adam step of ``value_and_grad``; with ``mesh``, params replicated over it and the
    batch split over it (placed before timing, as a training loop's prefetch would)."""
    optimizer = optax.adam(1e-3)

    def step(params, opt_state, xs, labels):
        loss, grads = value_and_grad(params, xs, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    if mesh is not None:
        params, opt_state = replicate((params, opt_state), mesh)
        xs, labels = shard_batch((xs, labels), mesh)
    jitted = jax.jit(step)
    compiled = jitted.lower(params, opt_state, xs, labels).compile()
    memory = compiled.memory_analysis()
    state = {"params": params, "opt_state": opt_state}

    def run():
        state["params"], state["opt_state"], loss = compiled(state["params"], state["opt_state"], xs, labels)
        loss.block_until_ready()

    return Contender(name, run, float(getattr(memory, "temp_size_in_bytes", float("nan"))))


def gradient_fns(cell: str, time: int, window: int = WINDOW) -> dict[str, Callable]:
    """``(params, xs, labels) -> (loss, grads)`` of a many-to-one problem: ``"explicit"`` (our BPTT
    with weight-gradient blocks of ``window``), ``"lean"`` (its lean mode, k = sqrt T) and
    ``"autodiff"`` (``jax.grad`` of the plain ``lax.scan`` loss)."""

    def explicit(params, xs, labels):
        loss, grads, _ = explicit_value_and_grad(cell, params, xs, labels, many_to_many=False, window=window)
        return loss, grads

    def lean(params, xs, labels):
        loss, grads, _ = explicit_model(as_model_params(params), xs, labels, spec_of_params(cell, params),
                                        lean=default_segment(time))
        return loss, from_model_params(grads)

    def plain_loss(params, xs, labels):
        spec = spec_of_params(cell, params)
        return loss_and_forward(as_model_params(params), xs, labels, spec)[0]

    return {"explicit": explicit, "lean": lean, "autodiff": jax.value_and_grad(plain_loss)}


def sharded_contenders(spec: ModelSpec, params, xs, labels, mesh, autodiff_name: str,
                       train: str | None = None) -> list[Contender]:
    """The explicit BPTT and ``jax.grad`` under the same ``shard_map`` over ``mesh``
    (:func:`perceptron1_jax.parallel.data_parallel`): the default training step, and how much of
    its gain is the devices rather than the explicit backward. ``train``: the default placement of
    the run (``training.step.PLACEMENTS``); given, also the explicit BPTT with each bidirectional
    layer's directions on the mesh's first two devices
    (:func:`perceptron1_jax.parallel.direction_parallel`), and the row ``train`` picks is named
    "(train's step)" (:func:`sharded_name`)."""
    n = mesh.size
    placements = [("bptt", sharded_name(n, train and "batch split", train), mesh, data_parallel),
                  ("autodiff", f"{autodiff_name}, {n} devices", mesh, data_parallel)]
    if train is not None:
        placements.append(("bptt", sharded_name(2, "directions", train), direction_mesh(list(mesh.devices.flat)[:2]),
                           direction_parallel))
    out = []
    for grad, name, placed_on, place in placements:
        fn = place(make_value_and_grad(spec, grad), spec, placed_on)
        out.append(_jax_contender(name, lambda p, x, y, fn=fn: fn(p, x, y, None, None)[:2], params, xs, labels,
                                  placed_on))
    return out


def sharded_name(devices: int, placement: str | None = None, train: str | None = None) -> str:
    """The explicit BPTT's row over ``devices``. ``placement`` None: the batch split, the only
    placement timed (the train's step). Else ``"batch split"`` or ``"directions"``, ``train`` the
    placement the default picks: its row ends in "(train's step)"."""
    if placement is None:
        return f"explicit BPTT, {devices} devices (train's step)"
    what = "batch split over" if placement == "batch split" else "directions on"
    step = " (train's step)" if placement == train else ""
    return f"explicit BPTT, {what} {devices} devices{step}"


def jax_contenders(cell: str, size: Size, xs, labels, flax_cells: bool = True, windows=(), mesh=None
                   ) -> list[Contender]:
    """``windows``: extra explicit-BPTT contenders with these weight-gradient block sizes;
    ``mesh``: also the data-parallel contenders over it (:func:`sharded_contenders`)."""
    xs, labels = jnp.asarray(xs), jnp.asarray(labels)
    params = init_params(jax.random.key(0), cell, size.input, size.hidden, size.classes)
    fns = gradient_fns(cell, size.time)
    spec = spec_of_params(cell, params)
    out = sharded_contenders(spec, as_model_params(params), xs, labels, mesh, "jax.grad(lax.scan)") if mesh else []
    out += [
        _jax_contender("explicit BPTT", fns["explicit"], params, xs, labels),
        _jax_contender(f"explicit BPTT, lean k={default_segment(size.time)}", fns["lean"], params, xs, labels),
        _jax_contender("jax.grad(lax.scan)", fns["autodiff"], params, xs, labels),
    ]
    out += [_jax_contender(f"explicit BPTT, window {w}", gradient_fns(cell, size.time, w)["explicit"], params, xs,
                           labels) for w in windows if w != WINDOW]
    if flax_cells:
        out += _flax_contenders(cell, size, xs, labels)
    return out


def model_contenders(size: Size, xs, labels, flax_cells: bool = True, mesh=None, train: str | None = None
                     ) -> list[Contender]:
    """The 2-layer bidirectional LSTM (many-to-one, ``h_n`` of the last layer): ``model_bptt``'s
    explicit backward, ``jax.grad`` of ``model_loss``'s forward, and Flax (``nn.Bidirectional`` over
    ``nn.RNN``, stacked); with ``mesh``, :func:`sharded_contenders` (``train`` the default
    placement)."""
    xs, labels = jnp.asarray(xs), jnp.asarray(labels)
    spec = bench_spec(size)
    params = init_model(jax.random.key(0), spec)

    def explicit(params, xs, labels):
        return explicit_model(params, xs, labels, spec)[:2]

    def plain_loss(params, xs, labels):
        return loss_and_forward(params, xs, labels, spec)[0]

    out = sharded_contenders(spec, params, xs, labels, mesh, "jax.grad(model_loss)", train) if mesh else []
    out += [_jax_contender("explicit BPTT (model_bptt)", explicit, params, xs, labels),
            _jax_contender("jax.grad(model_loss)", jax.value_and_grad(plain_loss), params, xs, labels)]
    if flax_cells:
        import flax.linen as nn

        for kind in (nn.LSTMCell, nn.OptimizedLSTMCell):

            class Model(nn.Module):
                cell_type: type

                @nn.compact
                def __call__(self, xs):
                    h = size.hidden
                    for _ in range(2):
                        directions = [nn.RNN(self.cell_type(features=h)) for _ in range(2)]
                        xs = nn.Bidirectional(*directions)(xs)
                    return nn.Dense(size.classes)(jnp.concatenate([xs[:, -1, :h], xs[:, 0, h:]], axis=-1))

            model = Model(kind)
            flax_params = model.init(jax.random.key(0), xs)

            def flax_loss(params, xs, labels, model=model):
                return losses.cross_entropy(model.apply(params, xs), labels)

            out.append(_jax_contender(f"flax nn.Bidirectional({kind.__name__}) x2", jax.value_and_grad(flax_loss),
                                      flax_params, xs, labels))
    return out


def _flax_contenders(cell, size, xs, labels) -> list[Contender]:
    import flax.linen as nn

    kinds = {"elman": [nn.SimpleCell], "lstm": [nn.LSTMCell, nn.OptimizedLSTMCell], "gru": [nn.GRUCell]}[cell]
    out = []
    for kind in kinds:

        class Model(nn.Module):
            cell_type: type

            @nn.compact
            def __call__(self, xs):
                hs = nn.RNN(self.cell_type(features=size.hidden))(xs)
                return nn.Dense(size.classes)(hs[:, -1])

        model = Model(kind)
        params = model.init(jax.random.key(0), xs)

        def flax_loss(params, xs, labels, model=model):
            return losses.cross_entropy(model.apply(params, xs), labels)

        out.append(_jax_contender(f"flax nn.RNN({kind.__name__})", jax.value_and_grad(flax_loss), params, xs, labels))
    return out


def torch_contenders(cell: str, size: Size, xs, labels, threads: int = 2) -> list[Contender]:
    try:
        import torch
    except ImportError:
        return []
    torch.set_num_threads(threads)
    layered = cell == MODEL_CELL
    module = {"elman": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU, MODEL_CELL: torch.nn.LSTM}[cell]
    options = {"num_layers": 2, "bidirectional": True} if layered else {}
    rnn = module(size.input, size.hidden, batch_first=True, **options)
    head = torch.nn.Linear(size.hidden * (2 if layered else 1), size.classes)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)
    x, y = torch.from_numpy(np.asarray(xs)), torch.from_numpy(np.asarray(labels)).long()
    criterion = torch.nn.CrossEntropyLoss()

    def run():
        optimizer.zero_grad(set_to_none=True)
        hs, state = rnn(x)
        if layered:  # h_n of the last layer: forward and backward direction
            h_n = state[0]
            features = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        else:
            features = hs[:, -1]
        loss = criterion(head(features), y)
        loss.backward()
        optimizer.step()

    name = "nn.LSTM(num_layers=2, bidirectional=True)" if layered else f"nn.{module.__name__}"
    return [Contender(f"torch {name} ({threads} threads)", run)]
