"""Checkpoints that run no code on load: msgpack (``flax.serialization``) with a checksum, written
atomically.

File layout: 8-byte magic ``P1JXCKPT``, the SHA-256 of the payload (32 bytes), then the msgpack
payload ``{"format", "step", "config" (JSON text), "spec" (the model's
:class:`~perceptron1_jax.spec.ModelSpec` as JSON text), "data" (the
:class:`~perceptron1_jax.data.DataInfo`, vocabulary included, as JSON text), "population" (JSON
text: a population's description and members' status, or null), "key" (uint32 key data), "params",
"opt_state"}``. Format 2 holds params in the model layout (``layers``/``head``/``embed``).
A write goes to a temporary file in the same folder, is fsynced and then renamed over the target,
so a crash mid-write never leaves a half checkpoint under a checkpoint's name and the previous
good one stays. A truncated or altered file fails the checksum with a
:class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import jax
import numpy as np
from flax import serialization

MAGIC = b"P1JXCKPT"
VERSION = 2
FORMAT = f"perceptron1_jax/{VERSION}"
_NAME = re.compile(r"^ckpt_(\d{8})\.msgpack$")
BEST = "best.msgpack"  # the checkpoint of the best evaluation loss (keep_best)
_FORMAT = re.compile(r"^perceptron1_jax/(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (missing, truncated, corrupted, wrong format)."""


class NewerFormatError(CheckpointError):
    """A checkpoint written by a newer perceptron1_jax: never skipped for an older one."""


def check_finite(tree, what: str) -> None:
    """Raise :class:`CheckpointError` naming the first leaf of ``tree`` holding NaN or inf."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        value = np.asarray(leaf)
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            raise CheckpointError(f"{what}: refusing to write non-finite values (in {jax.tree_util.keystr(path)})")


def checkpoint_path(out_dir, step: int) -> Path:
    return Path(out_dir) / f"ckpt_{step:08d}.msgpack"


def list_checkpoints(out_dir) -> list[Path]:
    """Checkpoint files in ``out_dir``, newest (highest step) first."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def save_checkpoint(out_dir, *, step: int, params, opt_state, key, config: dict, spec: dict | None = None,
                    data: dict | None = None, population: dict | None = None, best: dict | None = None,
                    keep: int = 3, stream=None) -> Path:
    """Write ``ckpt_<step>.msgpack`` atomically into ``out_dir`` and keep the newest ``keep`` files;
    with ``best`` (``{"step", "eval_loss"}``), write ``best.msgpack`` instead (:data:`BEST`: never
    pruned, never what a resume starts from).

    ``population``: a population's description and its members' status (JSON); its ``params``
    and ``opt_state`` then carry a leading member axis.

    ``stream``: a stream run's :class:`~perceptron1_jax.online.OnlineStream` (its state and
    influence, a population's stacked), saved as ``stream`` (read back as a state dict).

    Params or optimizer state holding NaN or inf are refused (:class:`CheckpointError`) before
    anything is written. An ``OSError`` while writing (a full disk) leaves the previous
    checkpoints as they were and no partial file behind.
    """
    folder = Path(out_dir)
    params, opt_state, stream = jax.tree.map(np.asarray, (params, opt_state, stream))  # on the host once
    check_finite({"params": params, "opt_state": opt_state, "stream": stream}, f"checkpoint of step {step}")
    folder.mkdir(parents=True, exist_ok=True)
    payload = serialization.msgpack_serialize(
        {
            "format": FORMAT,
            "step": int(step),
            "config": json.dumps(config, sort_keys=True),
            "spec": json.dumps(spec, sort_keys=True),
            "data": json.dumps(data, sort_keys=True),
            "population": json.dumps(population, sort_keys=True),
            "best": json.dumps(best, sort_keys=True),
            "key": np.asarray(jax.random.key_data(key) if _is_typed_key(key) else key),
            "params": serialization.to_state_dict(params),
            "opt_state": serialization.to_state_dict(opt_state),
            **({} if stream is None else {"stream": serialization.to_state_dict(stream)}),
        }
    )
    target = folder / BEST if best is not None else checkpoint_path(folder, step)
    tmp = folder / f".{target.name}.tmp-{os.getpid()}"
    try:
        write_file(tmp, MAGIC + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(folder)
    if best is None:
        for old in list_checkpoints(folder)[keep:]:
            old.unlink()
    return target


def write_file(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` and fsync it (the one place checkpoint bytes reach the disk)."""
    with open(path, "wb") as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())


def _is_typed_key(key) -> bool:
    return hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path) -> dict:
    """Read and verify one checkpoint file; returns the raw payload with ``config`` parsed.

    ``params`` and ``opt_state`` come back as nested dicts of numpy arrays (restore the optax
    state with ``flax.serialization.from_state_dict(optimizer.init(params), raw)``).
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({err.strerror})") from err
    if len(blob) < len(MAGIC) + 32 or blob[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"checkpoint {path}: not a perceptron1_jax checkpoint (bad header)")
    digest, payload = blob[len(MAGIC) : len(MAGIC) + 32], blob[len(MAGIC) + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path}: checksum mismatch (truncated or corrupted file)")
    try:
        raw = serialization.msgpack_restore(payload)
    except Exception as err:  # noqa: BLE001 - any decoding failure means a bad file
        raise CheckpointError(f"checkpoint {path}: cannot be decoded ({err})") from err
    if raw.get("format") != FORMAT:
        found = _FORMAT.match(str(raw.get("format")))
        if found and int(found.group(1)) > VERSION:
            raise NewerFormatError(f"checkpoint {path}: written by a newer perceptron1_jax (format "
                                   f"{raw['format']!r}; this version reads {FORMAT!r}): upgrade to read it")
        raise CheckpointError(f"checkpoint {path}: expected format {FORMAT!r}, got {raw.get('format')!r}")
    raw["config"] = json.loads(raw["config"])
    raw["spec"] = json.loads(raw["spec"]) if "spec" in raw else None
    raw["data"] = json.loads(raw["data"]) if "data" in raw else None
    raw["population"] = json.loads(raw["population"]) if "population" in raw else None
    raw["best"] = json.loads(raw["best"]) if "best" in raw else None
    raw["path"] = str(path)
    return raw


def remove_temporaries(out_dir) -> list[Path]:
    """Delete the temporary files a killed write left in ``out_dir`` (``.<name>.tmp-<pid>``);
    returns them. Call only when no other process writes to the folder."""
    folder = Path(out_dir)
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and ".tmp-" in p.name] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def latest_good_checkpoint(out_dir, on_bad=None) -> dict | None:
    """The newest checkpoint in ``out_dir`` that reads cleanly, or None if there is none.

    ``on_bad(error)`` is called for each newer file that fails (e.g. to warn); those are skipped.
    A checkpoint of a newer format is not skipped: :class:`NewerFormatError` (going back to an
    older checkpoint would silently lose the newer one's work).
    """
    for path in list_checkpoints(out_dir):
        try:
            return read_checkpoint(path)
        except NewerFormatError:
            raise
        except CheckpointError as err:
            if on_bad is not None:
                on_bad(err)
    return None
