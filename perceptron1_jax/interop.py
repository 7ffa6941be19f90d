"""Weight mapping between our cell params and Flax linen's ``SimpleCell``/``LSTMCell``/``GRUCell``.

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

import jax.numpy as jnp

from perceptron1_jax import validate

_GATES = {"elman": None, "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def _blocks(w, n):
    return jnp.split(w, n, axis=-1)


def to_flax(cell: str, cell_params: dict) -> dict:
    """Our ``params["cell"]`` -> the ``params`` collection of the matching Flax linen cell."""
    spec = validate.get_cell(cell)
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
