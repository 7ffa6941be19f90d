"""A model as data: :class:`LayerSpec` and :class:`ModelSpec`, frozen (hashable) dataclasses that are
static arguments under ``jax.jit``. Every field is checked when the spec is made.

A model is ``[embedding] -> layer_1 -> ... -> layer_L -> head``:

* inputs: floats ``xs: (batch, time, input_size)``, or integer token ids ``xs: (batch, time)`` with
  ``vocab_size`` and ``embed_size`` (an embedding table ``(vocab_size, embed_size)`` comes first);
* each layer a recurrent cell over time, one direction or two (``bidirectional``: outputs
  ``concatenate([h_fwd_t, h_bwd_t])``, ``2H`` features, the next layer's input);
* the head: a linear map of the last layer's features to ``num_outputs``, scored by softmax
  cross-entropy (integer targets) or mean squared error (float targets), once per sequence
  (``many_to_many=False``: the final states) or at every valid step.

Parameter layout (pinned; :func:`param_shapes`)::

    {"embed": (vocab_size, embed_size),            # token inputs only
     "layers": [{"fwd": cell params, "bwd": cell params (bidirectional only)}, ...],
     "head": {"W": (features, num_outputs), "b": (num_outputs,)}}
"""

from __future__ import annotations

import dataclasses
import numbers

from perceptron1_jax.cells import CELLS

LOSSES = ("cross_entropy", "mse")
FORMS = ("hoist", "wavefront", "fused_directions")
DIRECTIONS = ("fwd", "bwd")
SCANS = ("sequential", "associative")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One recurrent layer: ``cell`` (a registered cell's name: ``"elman"``, ``"lstm"``, ``"gru"``,
    ``"mingru"``, ``"minlstm"`` or your own), ``hidden_size`` per direction, whether it also reads
    the sequence backwards, and how it walks time: ``scan="sequential"`` (a ``lax.scan``, the
    default) or ``"associative"`` (cells whose recurrence is linear in ``h``, ``h' = a * h + b``:
    an associative scan of depth ``O(log T)`` forwards and backwards, for accelerators;
    :mod:`perceptron1_jax.associative`)."""

    cell: str
    hidden_size: int
    bidirectional: bool = False
    scan: str = "sequential"

    def __post_init__(self):
        if not isinstance(self.cell, str) or self.cell not in CELLS:
            raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {self.cell!r}")
        object.__setattr__(self, "hidden_size", _positive_int("hidden_size", self.hidden_size))
        _flag("bidirectional", self.bidirectional)
        if self.scan not in SCANS:
            raise ValueError(f"scan: expected one of {list(SCANS)}, got {self.scan!r}")
        if self.scan == "associative" and CELLS[self.cell].linear is None:
            linear = sorted(name for name, cell in CELLS.items() if cell.linear is not None)
            raise ValueError(f"scan: 'associative' needs a cell whose recurrence is linear in h (one of {linear}), "
                             f"got cell {self.cell!r}")

    @property
    def directions(self) -> tuple[str, ...]:
        return DIRECTIONS if self.bidirectional else DIRECTIONS[:1]

    @property
    def features(self) -> int:
        """Output features per step: ``hidden_size``, twice that when bidirectional."""
        return self.hidden_size * len(self.directions)


@dataclasses.dataclass(frozen=True)
class LoopForms:
    """How the time loops are laid out; the math is the same in every form (tested equal in float64).
    Each field True, False or None: None is the process-wide choice of the deprecated setters when one
    was made, else the default of the platform the computation runs on (on accelerators yes, on CPU no;
    measured in docs/performance.md).

    * ``hoist``: project every step's input ``x W_x + b`` in one product before the loop;
    * ``wavefront``: run stacked one-direction layers as one loop (:mod:`perceptron1_jax.wavefront`);
    * ``fused_directions``: run both directions of a bidirectional layer in one ``vmap``-ed scan.

    A static field of :class:`ModelSpec` (``ModelSpec(..., forms=LoopForms(wavefront=True))``), so
    ``jax.jit`` sees it: two forms compile side by side in one process."""

    hoist: bool | None = None
    wavefront: bool | None = None
    fused_directions: bool | None = None

    def __post_init__(self):
        for name in FORMS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name}: expected True, False or None, got {type(value).__name__} {value!r}")


PROCESS_FORMS: dict[str, bool | None] = dict.fromkeys(FORMS)
"""The deprecated process-wide choices (``p1.set_wavefront``, ``p1.set_fused_directions``,
``p1.set_hoist_input_projection``): what a :class:`LoopForms` field left None takes. The public
functions fold them into the spec before ``jax.jit`` sees it (:func:`with_process_forms`), so a
change compiles the other form instead of clearing JAX's caches."""


def with_process_forms(forms: LoopForms) -> LoopForms:
    """``forms`` with each field left None set to the process-wide choice, where one was made."""
    chosen = {name: PROCESS_FORMS[name] for name in FORMS if getattr(forms, name) is None}
    return dataclasses.replace(forms, **{k: v for k, v in chosen.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A layered recurrent model (see the module docstring). ``layers`` may be given as a list."""

    layers: tuple[LayerSpec, ...]
    num_outputs: int
    input_size: int | None = None
    vocab_size: int | None = None
    embed_size: int | None = None
    loss: str = "cross_entropy"
    many_to_many: bool = False
    dropout: float = 0.0
    forms: LoopForms = LoopForms()  # how the loops are laid out (not the model: the same math)

    def __post_init__(self):
        layers = self.layers
        if not isinstance(layers, (tuple, list)) or not layers:
            raise ValueError(f"layers: expected a non-empty sequence of LayerSpec, got {layers!r}")
        for k, layer in enumerate(layers):
            if not isinstance(layer, LayerSpec):
                raise TypeError(f"layers[{k}]: expected a LayerSpec, got {type(layer).__name__} {layer!r}")
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "num_outputs", _positive_int("num_outputs", self.num_outputs))
        if (self.input_size is None) == (self.vocab_size is None):
            raise ValueError(
                "input_size/vocab_size: expected exactly one (input_size for float inputs, vocab_size for "
                f"token ids), got input_size={self.input_size!r}, vocab_size={self.vocab_size!r}"
            )
        if self.input_size is not None:
            object.__setattr__(self, "input_size", _positive_int("input_size", self.input_size))
            if self.embed_size is not None:
                raise ValueError(f"embed_size: expected None for float inputs (input_size), got {self.embed_size!r}")
        else:
            object.__setattr__(self, "vocab_size", _positive_int("vocab_size", self.vocab_size))
            if self.embed_size is None:
                raise ValueError("embed_size: expected a positive int with vocab_size (token inputs), got None")
            object.__setattr__(self, "embed_size", _positive_int("embed_size", self.embed_size))
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {list(LOSSES)}, got {self.loss!r}")
        _flag("many_to_many", self.many_to_many)
        rate = self.dropout
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {rate!r}")
        object.__setattr__(self, "dropout", float(rate))
        if not isinstance(self.forms, LoopForms):
            raise TypeError(f"forms: expected a LoopForms, got {type(self.forms).__name__} {self.forms!r}")

    @property
    def tokens(self) -> bool:
        """Whether inputs are integer token ids (an embedding table comes first)."""
        return self.vocab_size is not None

    def layer_input_size(self, k: int) -> int:
        """Features entering layer ``k``: the input or embedding size, then the layer below's output."""
        if k == 0:
            return self.embed_size if self.tokens else self.input_size
        return self.layers[k - 1].features

    @property
    def head_features(self) -> int:
        return self.layers[-1].features


def param_shapes(spec: ModelSpec) -> dict:
    """The pinned parameter layout with shapes in place of arrays."""
    shapes = {}
    if spec.tokens:
        shapes["embed"] = (spec.vocab_size, spec.embed_size)
    shapes["layers"] = [
        {d: CELLS[layer.cell].param_shapes(spec.layer_input_size(k), layer.hidden_size) for d in layer.directions}
        for k, layer in enumerate(spec.layers)
    ]
    shapes["head"] = {"W": (spec.head_features, spec.num_outputs), "b": (spec.num_outputs,)}
    return shapes


def parse_layers(text: str, bidirectional: bool = False, scan: str = "sequential") -> tuple[LayerSpec, ...]:
    """``"lstm:128,lstm:64"`` -> two :class:`LayerSpec` (``cell:size`` per layer), each with
    ``bidirectional`` and ``scan``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"layers: expected cell:size per layer, e.g. 'lstm:128,lstm:64', got {text!r}")
    layers = []
    for part in text.split(","):
        cell, sep, size = part.strip().partition(":")
        if not sep or not size.strip().isdigit():
            raise ValueError(f"layers: expected cell:size per layer, e.g. 'lstm:128,lstm:64', got {part.strip()!r}")
        layers.append(LayerSpec(cell.strip(), int(size), bidirectional, scan))
    return tuple(layers)


def spec_to_dict(spec: ModelSpec) -> dict:
    """A plain dict (JSON, msgpack) that :func:`spec_from_dict` turns back into the same spec."""
    values = dataclasses.asdict(spec)
    if spec.forms == LoopForms():  # written only when chosen (older readers, same files)
        del values["forms"]
    # A sequential layer is written as before the scan option existed (older readers, same files).
    values["layers"] = [{k: v for k, v in dataclasses.asdict(layer).items() if (k, v) != ("scan", "sequential")}
                        for layer in spec.layers]
    return values


def spec_from_dict(values: dict) -> ModelSpec:
    values = dict(values)
    values["layers"] = tuple(LayerSpec(**layer) for layer in values["layers"])
    if "forms" in values:
        values["forms"] = LoopForms(**values["forms"])
    return ModelSpec(**values)
