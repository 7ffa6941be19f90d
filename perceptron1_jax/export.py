"""A run's parameters in files that need no perceptron1_jax to open: ``.npz`` and orbax.

``export_params(run, to)`` writes the parameters of one checkpoint of a run (its newest, ``step``'s
or the best) as

- ``format="npz"``: one array per leaf under its ``/``-joined path, e.g. ``layers/0/fwd/W_x``,
  ``layers/1/bwd/b``, ``head/W``, ``embed`` (``numpy.load`` opens it);
- ``format="orbax"``: an orbax checkpoint folder of the same tree, which
  ``orbax.checkpoint.PyTreeCheckpointer().restore(folder)`` opens (orbax comes with flax).

``load_params(path)`` reads either back into the model's layout (``{"layers": [{direction: {...}}],
"head": {...}, "embed": ...}``, lists where a path holds layer numbers), as JAX arrays of the saved
dtypes. A population's checkpoint exports its members' params stacked on a leading member axis,
unless ``member`` picks one.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

FORMATS = ("npz", "orbax")
SEPARATOR = "/"


def flat_params(params) -> dict[str, np.ndarray]:
    """``{"layers/0/fwd/W_x": array, ...}``: each leaf of ``params`` under its ``/``-joined path."""
    return {jax.tree_util.keystr(path, simple=True, separator=SEPARATOR): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def nested_params(flat: dict) -> dict:
    """The model's layout of ``flat`` (:func:`flat_params`'s): nested dicts, and lists where every
    key of a level is a number ``0..n-1`` (the layers)."""
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split(SEPARATOR)
        level = tree
        for part in parents:
            level = level.setdefault(part, {})
            if not isinstance(level, dict):
                raise ValueError(f"params: {name!r} nests under a leaf")
        level[leaf] = value
    return _lists(tree)


def _lists(node):
    if not isinstance(node, dict):
        return node
    children = {k: _lists(v) for k, v in node.items()}
    if children and sorted(children) == sorted(str(i) for i in range(len(children))):
        return [children[str(i)] for i in range(len(children))]
    return children


def checkpoint_file(run: Path, *, step: int | None = None, best: bool = False) -> Path:
    """The checkpoint of run folder (or checkpoint file) ``run`` to export: ``step``'s, the best
    (``best.msgpack``), or the newest. A ``ValueError`` names the option for one that is not there."""
    from perceptron1_jax.checkpoint import BEST, checkpoint_path, list_checkpoints

    run = Path(run)
    if step is not None and best:
        raise ValueError(f"step: expected either a step or the best checkpoint, got step {step} and best")
    if run.is_file():
        if step is not None or best:
            raise ValueError(f"{'step' if step is not None else 'best'}: expected a run folder to pick a checkpoint "
                             f"from, got the file {run}")
        return run
    if not run.is_dir():
        raise ValueError(f"run: expected a run folder or a checkpoint file, got {run} (not found)")
    if best:
        if not (run / BEST).is_file():
            raise ValueError(f"best: expected a best checkpoint in {run} (a run trained with keep_best), got none")
        return run / BEST
    if step is not None:
        path = checkpoint_path(run, step)
        if not path.is_file():
            raise ValueError(f"step: expected a step with a checkpoint in {run}, got {step} (no {path.name})")
        return path
    found = list_checkpoints(run)
    if not found:
        raise ValueError(f"run: expected a run folder with checkpoints, got {run} (no ckpt_*.msgpack)")
    return found[0]


def export_params(run, to, *, step: int | None = None, best: bool = False, format: str = "npz",
                  member: int | None = None) -> tuple[Path, int]:
    """Write the params of ``run``'s chosen checkpoint (:func:`checkpoint_file`) to ``to`` in
    ``format`` (see the module doc); returns ``(the checkpoint read, its step)``. ``member``: of a
    population, that member's params alone. ``to`` must not exist yet (nothing is overwritten)."""
    from perceptron1_jax.training import load_checkpoint

    if format not in FORMATS:
        raise ValueError(f"format: expected one of {list(FORMATS)}, got {format!r}")
    to = Path(to)
    if format == "npz" and to.suffix != ".npz":
        raise ValueError(f"to: expected a file name ending in .npz for format npz, got {str(to)!r}")
    if to.exists():
        raise ValueError(f"to: expected a path that does not exist yet (nothing is overwritten), got {str(to)!r}")
    source = checkpoint_file(run, step=step, best=best)
    loaded = load_checkpoint(source, member=member)
    flat = flat_params(loaded["params"])
    if format == "npz":
        np.savez(to, **flat)
    else:
        import orbax.checkpoint as ocp

        ocp.PyTreeCheckpointer().save(to.resolve(), nested_params(flat))
    return source, int(loaded["step"])


def load_params(path):
    """The params written by :func:`export_params` (an ``.npz`` file or an orbax folder), in the
    model's layout, as JAX arrays of the saved dtypes (float64 needs JAX's 64-bit mode on)."""
    path = Path(path)
    if path.is_dir():
        import orbax.checkpoint as ocp

        flat = flat_params(ocp.PyTreeCheckpointer().restore(path.resolve()))
    elif path.is_file():
        with np.load(path, allow_pickle=False) as arrays:
            flat = {name: arrays[name] for name in arrays.files}
    else:
        raise ValueError(f"path: expected an .npz file or an orbax folder, got {str(path)!r} (not found)")
    wide = [name for name, a in flat.items() if a.dtype == np.float64]
    if wide and not jax.config.read("jax_enable_x64"):
        raise ValueError(f"path: {str(path)!r} holds float64 params ({wide[0]}): turn JAX's 64-bit mode on "
                         "(jax.config.update('jax_enable_x64', True)) to load them, got it off")
    return jax.tree.map(jnp.asarray, nested_params(flat))
