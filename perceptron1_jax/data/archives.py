"""The UCR/UEA archives' datasets that ship inside the ``aeon`` package (its wheel holds their
``.ts`` files, so nothing is downloaded): ``aeon:NAME`` names the ``NAME_TRAIN.ts`` /
``NAME_TEST.ts`` pair of ``aeon/datasets/data/NAME``. ``aeon`` is the optional extra
``perceptron1_jax[archives]``; this module only finds its files (it never imports it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from perceptron1_jax.data.source import DataError

PREFIX = "aeon:"
SPLITS = ("TRAIN", "TEST")


def is_archive(path) -> bool:
    """Whether ``path`` names a dataset of the archives (``aeon:NAME``)."""
    return isinstance(path, str) and path.startswith(PREFIX)


def _data_folder() -> Path:
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data: the aeon: datasets need the optional extra: pip install 'perceptron1_jax[archives]' "
                        "(installs aeon, whose package ships them)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def shipped() -> list[str]:
    """The names of the datasets with a TRAIN and a TEST ``.ts`` file in aeon's package."""
    folder = _data_folder()
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and all((p / f"{p.name}_{s}.ts").is_file() for s in SPLITS))


def archive_file(name: str, split: str = "TRAIN") -> Path:
    """The ``.ts`` file of split ``split`` (TRAIN or TEST) of ``aeon:NAME`` (or of ``NAME``); a
    name aeon does not ship is refused with the list of those it does (no download is attempted)."""
    name = name.removeprefix(PREFIX)
    names = shipped()
    if name not in names:
        raise DataError(f"data: aeon:{name}: expected a dataset shipped inside aeon's package, one of {names} "
                        "(nothing is downloaded)")
    return _data_folder() / name / f"{name}_{split}.ts"
