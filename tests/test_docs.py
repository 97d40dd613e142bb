"""The documentation's examples run: every ```python block of the pages below, in order, in one
namespace per page (so a later block may use an earlier one's names)."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["bring-your-own-model.md", "diffusers-pipelines.md"]


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_of_the_page_run(page, capsys):
    pytest.importorskip("diffusers", reason="the examples include the diffusers adapter")
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{page} has no python blocks"
    namespace: dict = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page}[block {i}]", "exec"), namespace)
        except Exception as err:  # the message names the block that failed
            raise AssertionError(f"{page}: python block {i} failed: {err!r}\n{block}") from err
