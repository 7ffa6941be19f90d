"""Weight exchange: our cell params and Flax linen's ``SimpleCell``/``LSTMCell``/``GRUCell``; whole
models and PyTorch ``state_dict``s (:func:`from_torch`, :func:`to_torch`).

Our convention stacks the gate blocks as columns (``W_x: (I, G*H)``, ``W_h: (H, G*H)``), Flax keeps
one ``Dense`` per gate. The maps are exact:

* Elman <-> ``SimpleCell``: ``i.kernel = W_x``, ``i.bias = b``, ``h.kernel = W_h``.
* LSTM <-> ``LSTMCell``/``OptimizedLSTMCell``: per gate ``k`` in ``[i, f, g, o]``:
  ``i{k}.kernel = W_x[:, k]``, ``h{k}.kernel = W_h[:, k]``, ``h{k}.bias = b[k]``.
  Flax's carry is ``(c, h)``; ours is ``(h, c)``.
* GRU <-> ``GRUCell``: Flax has no recurrent bias on ``r`` and ``z``; since ``b_xr + b_hr`` enter
  the same sigmoid, ``to_flax`` folds them into ``i{r,z}.bias`` and ``from_flax`` sets ``b_h[r, z]``
  to zero. ``in.bias = b_x[n]``, ``hn.bias = b_h[n]`` (inside ``r * (...)``) map one to one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from perceptron1_jax import validate
from perceptron1_jax.cells import CELLS
from perceptron1_jax.spec import ModelSpec

_GATES = {"elman": None, "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def _check_interop_cell(cell: str, where: str) -> None:
    """The cells Flax and PyTorch have: a ``ValueError`` for minGRU and minLSTM (theirs do not exist)."""
    if cell not in _GATES:
        raise ValueError(f"cell: expected one of {list(_GATES)} ({where} has no {cell} cell), got {cell!r}")


def _check_interop_spec(spec: ModelSpec, where: str) -> None:
    for layer in spec.layers:
        _check_interop_cell(layer.cell, where)


def _blocks(w, n):
    return jnp.split(w, n, axis=-1)


def to_flax(cell: str, cell_params: dict) -> dict:
    """Our ``params["cell"]`` -> the ``params`` collection of the matching Flax linen cell."""
    spec = validate.get_cell(cell)
    _check_interop_cell(cell, "Flax linen")
    validate.check_params({"cell": cell_params}, spec, need_readout=False)
    p = cell_params
    if cell == "elman":
        return {"i": {"kernel": p["W_x"], "bias": p["b"]}, "h": {"kernel": p["W_h"]}}
    gates = _GATES[cell]
    wx, wh = _blocks(p["W_x"], len(gates)), _blocks(p["W_h"], len(gates))
    out = {}
    if cell == "lstm":
        for k, gate in enumerate(gates):
            out[f"i{gate}"] = {"kernel": wx[k]}
            out[f"h{gate}"] = {"kernel": wh[k], "bias": _blocks(p["b"], 4)[k]}
        return out
    bx, bh = _blocks(p["b_x"], 3), _blocks(p["b_h"], 3)
    for k, gate in enumerate(gates):
        if gate == "n":
            out["in"] = {"kernel": wx[k], "bias": bx[k]}
            out["hn"] = {"kernel": wh[k], "bias": bh[k]}
        else:
            out[f"i{gate}"] = {"kernel": wx[k], "bias": bx[k] + bh[k]}
            out[f"h{gate}"] = {"kernel": wh[k]}
    return out


def from_flax(cell: str, flax_params: dict) -> dict:
    """The ``params`` collection of a Flax linen cell -> our ``params["cell"]``."""
    validate.get_cell(cell)
    _check_interop_cell(cell, "Flax linen")
    f = flax_params
    if cell == "elman":
        return {"W_x": f["i"]["kernel"], "W_h": f["h"]["kernel"], "b": f["i"]["bias"]}
    gates = _GATES[cell]
    w_x = jnp.concatenate([f[f"i{g}"]["kernel"] for g in gates], axis=1)
    w_h = jnp.concatenate([f[f"h{g}"]["kernel"] for g in gates], axis=1)
    if cell == "lstm":
        return {"W_x": w_x, "W_h": w_h, "b": jnp.concatenate([f[f"h{g}"]["bias"] for g in gates])}
    zeros = jnp.zeros_like(f["hn"]["bias"])
    return {
        "W_x": w_x,
        "W_h": w_h,
        "b_x": jnp.concatenate([f["ir"]["bias"], f["iz"]["bias"], f["in"]["bias"]]),
        "b_h": jnp.concatenate([zeros, zeros, f["hn"]["bias"]]),
    }


# --------------------------------------------------------------------------- PyTorch

def _numpy(value):
    """A NumPy array from a NumPy array or a (CPU) torch tensor, without importing torch. A
    bfloat16 tensor (which ``.numpy()`` refuses) comes out as NumPy bfloat16 (``ml_dtypes``), by way
    of float32: the widening and the narrowing are both exact."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            return value.float().numpy().astype(jnp.bfloat16)
        value = value.numpy()
    return np.asarray(value)


def _torch_keys(spec: ModelSpec, rnn: str, embedding: str, head: str) -> dict[str, tuple]:
    """Every state-dict key of ``spec`` -> where it lives in our params (a path) and its shape."""
    keys = {}
    if spec.tokens:
        keys[f"{embedding}.weight"] = (("embed",), (spec.vocab_size, spec.embed_size))
    for k, layer in enumerate(spec.layers):
        gates = CELLS[layer.cell].num_gates * layer.hidden_size
        for d in layer.directions:
            suffix = f"_l{k}" + ("_reverse" if d == "bwd" else "")
            keys[f"{rnn}.weight_ih{suffix}"] = (("layers", k, d, "W_x"), (gates, spec.layer_input_size(k)))
            keys[f"{rnn}.weight_hh{suffix}"] = (("layers", k, d, "W_h"), (gates, layer.hidden_size))
            keys[f"{rnn}.bias_ih{suffix}"] = (("layers", k, d, "bias_ih"), (gates,))
            keys[f"{rnn}.bias_hh{suffix}"] = (("layers", k, d, "bias_hh"), (gates,))
    keys[f"{head}.weight"] = (("head", "W"), (spec.num_outputs, spec.head_features))
    keys[f"{head}.bias"] = (("head", "b"), (spec.num_outputs,))
    return keys


def from_torch(state_dict, spec: ModelSpec, *, rnn: str = "rnn", embedding: str = "embedding",
               head: str = "head") -> dict:
    """A PyTorch ``state_dict`` -> params of ``spec`` (NumPy arrays or CPU tensors in, jax arrays out).

    Keys (PyTorch's names): ``{embedding}.weight`` (``nn.Embedding``, token models),
    ``{rnn}.weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` and their
    ``_reverse`` twins (``nn.RNN``/``nn.LSTM``/``nn.GRU`` with ``num_layers``, ``bidirectional``,
    ``batch_first=True``, tanh), ``{head}.weight``, ``{head}.bias`` (``nn.Linear``). Gate orders
    coincide (LSTM ``[i, f, g, o]``, GRU ``[r, z, n]``); ``W = weight.T``. Elman and LSTM add the two
    biases into our one ``b``; the GRU keeps both (``b_x = bias_ih``, ``b_h = bias_hh``). Strict:
    a missing, unexpected or misshaped entry raises ``ValueError`` naming the key.
    """
    spec = validate.check_spec(spec)
    _check_interop_spec(spec, "PyTorch")
    expected = _torch_keys(spec, rnn, embedding, head)
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}")
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(f"state_dict: missing keys {missing}, unexpected keys {unexpected} for this spec")
    arrays = {}
    for key, (_, shape) in expected.items():
        value = _numpy(state_dict[key])
        if value.shape != shape:
            raise ValueError(f"state_dict[{key!r}]: expected shape {shape}, got {value.shape}")
        if not jnp.issubdtype(value.dtype, jnp.floating):  # NumPy's own test misses ml_dtypes' bfloat16
            raise TypeError(f"state_dict[{key!r}]: expected floats, got dtype {value.dtype}")
        arrays[key] = value
    params = {"layers": [{d: {} for d in layer.directions} for layer in spec.layers], "head": {}}
    for key, (path, _) in expected.items():
        value = arrays[key].T if path[-1] in ("W", "W_x", "W_h") else arrays[key]  # torch: (out, in)
        if path[0] == "embed":
            params["embed"] = jnp.asarray(value)
        elif path[0] == "head":
            params["head"][path[1]] = jnp.asarray(value)
        else:
            params["layers"][path[1]][path[2]][path[3]] = value
    for k, layer in enumerate(spec.layers):
        for d in layer.directions:
            raw = params["layers"][k][d]
            cell = {"W_x": jnp.asarray(raw["W_x"]), "W_h": jnp.asarray(raw["W_h"])}
            if layer.cell == "gru":
                cell.update(b_x=jnp.asarray(raw["bias_ih"]), b_h=jnp.asarray(raw["bias_hh"]))
            else:
                cell["b"] = jnp.asarray(raw["bias_ih"] + raw["bias_hh"])
            params["layers"][k][d] = cell
    return params


def to_torch(params, spec: ModelSpec, *, rnn: str = "rnn", embedding: str = "embedding",
             head: str = "head") -> dict:
    """Params of ``spec`` -> a PyTorch ``state_dict`` of NumPy arrays (the keys of :func:`from_torch`;
    load with ``module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``).

    Elman and LSTM: ``bias_ih = b`` and ``bias_hh = 0`` (only their sum matters), so
    ``from_torch(to_torch(params))`` gives ``params`` back exactly. bfloat16 params come out as
    float32 arrays (``torch.from_numpy`` takes no bfloat16; the widening is exact, and
    ``.to(torch.bfloat16)`` or ``from_torch`` with bfloat16 tensors gives the same values back).
    """
    spec = validate.check_spec(spec)
    _check_interop_spec(spec, "PyTorch")
    validate.check_model_params(params, spec)
    params = jax.tree.map(lambda a: np.array(a, np.float32 if a.dtype == jnp.bfloat16 else a.dtype), params)
    out = {}
    for key, (path, _) in _torch_keys(spec, rnn, embedding, head).items():
        if path[0] == "embed":
            out[key] = params["embed"]
            continue
        if path[0] == "head":
            leaf = np.asarray(params["head"][path[1]])
            out[key] = leaf.T if path[1] == "W" else leaf
            continue
        cell = params["layers"][path[1]][path[2]]
        name = path[3]
        if name in ("W_x", "W_h"):
            out[key] = np.asarray(cell[name]).T
        elif "b_x" in cell:
            out[key] = np.asarray(cell["b_x"] if name == "bias_ih" else cell["b_h"])
        else:
            out[key] = np.asarray(cell["b"]) if name == "bias_ih" else np.zeros_like(np.asarray(cell["b"]))
    return out
