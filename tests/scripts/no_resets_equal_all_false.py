"""Training without resets and with resets that are all False, as tests/test_train_resets.py's run:
prints ``{"identical": bool, "leaves": n}`` as JSON (every parameter bit for bit). Run in a
subprocess with XLA's default code generation (the claim is about the programs users run)."""

import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_train_resets import CFG, LABELS, RESETS, XS  # noqa: E402

from perceptron1_jax.data import from_arrays  # noqa: E402
from perceptron1_jax.train import train  # noqa: E402

with tempfile.TemporaryDirectory() as folder:
    params = [train(CFG, Path(folder) / name, data=from_arrays(XS, labels=LABELS, resets=resets, val_fraction=0.25,
                                                                 seed=1), progress=False, log=lambda _: None).params
              for name, resets in (("plain", None), ("false", np.zeros_like(RESETS)))]
pairs = list(zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[1]), strict=True))
print(json.dumps({"identical": all(np.array_equal(a, b) for a, b in pairs), "leaves": len(pairs)}))
