"""The documentation's examples run: every ```python block of every page of ``docs/`` and of the
README, in order, in one namespace per page (so a later block may use an earlier one's names),
from a temporary working folder (so files the examples write land there)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")) + ["README.md"]
BLOCK = re.compile(r"```python\n(.*?)```", flags=re.S)


def blocks(page: str) -> list[str]:
    return BLOCK.findall((ROOT / page).read_text())


def test_the_docs_hold_python_examples():
    assert sum(len(blocks(p)) for p in PAGES) >= 10


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)])
def test_python_blocks_of_the_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(blocks(page)):
        try:
            exec(compile(block, f"{page}[block {i}]", "exec"), namespace)
        except Exception as err:  # the message names the block that failed
            raise AssertionError(f"{page}: python block {i} failed: {err!r}\n{block}") from err
