"""The sampler tables of the documentation are in step with the registry.

Every key of ``scoresde.SAMPLERS`` appears in the README's sampler table (the table under
``## Samplers``, whose heading sentence also states the number of keys) and in a table row of one
of the per-family pages ``docs/samplers-*.md``, where its update, order, NFE and paper are given.
A sampler added to the registry without its documentation fails here.
"""

import re
from pathlib import Path

import pytest

from scoresde.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]


def readme_sampler_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Samplers\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no '## Samplers' section"
    return match.group(1)


def table_names(text: str) -> set[str]:
    """The backticked names in the rows of the markdown tables of ``text``."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return {name for row in rows for name in re.findall(r"`([a-z0-9_]+)`", row)}


@pytest.mark.parametrize("key", sorted(SAMPLERS))
def test_every_registry_key_is_in_the_readme_sampler_table(key):
    assert key in table_names(readme_sampler_section()), f"{key!r} is missing from README.md"


@pytest.mark.parametrize("key", sorted(SAMPLERS))
def test_every_registry_key_is_in_a_sampler_page_table(key):
    pages = sorted((ROOT / "docs").glob("samplers-*.md"))
    assert pages, "no docs/samplers-*.md pages"
    found = [p.name for p in pages if key in table_names(p.read_text())]
    assert found, f"{key!r} is in no table of {[p.name for p in pages]}"


def test_the_readme_states_the_number_of_registry_keys():
    match = re.search(r"(\d+) registry keys", readme_sampler_section())
    assert match, "the README's sampler section does not state the number of registry keys"
    assert int(match.group(1)) == len(SAMPLERS)
