"""docs/reuse.md runs as written: its Python blocks, in page order, in one namespace (a fresh
interpreter state per test run; x64 off, as a user's process starts)."""

import pathlib
import re

import pytest

pytest.importorskip("equinox")

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "reuse.md"


@pytest.mark.standard_promotion  # optax, Equinox and Flax are not strict-promotion clean
def test_every_block_of_the_reuse_page_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 5, len(blocks)
    namespace = {"__name__": "reuse_doc"}
    for k, block in enumerate(blocks):
        exec(compile(block, f"{DOC}:block{k}", "exec"), namespace)  # noqa: S102
