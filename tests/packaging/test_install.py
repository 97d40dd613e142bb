"""A plain (non-editable) install works away from the source tree.

``pip install .`` into a fresh virtual environment (``--system-site-packages``, so torch and the
other dependencies come from the interpreter running the tests, and ``--no-deps
--no-build-isolation``, so nothing is downloaded), then ``python -m scoresde recommend`` run
from an empty temporary folder: the benchmark tables it ranks from must ship as package data.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The python of a fresh venv holding a non-editable install of a copy of the package."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, src / f)
    shutil.copytree(REPO / "scoresde", src / "scoresde",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    venv = root / "venv"
    # no ensurepip: the venv sees the running interpreter's pip through its site-packages
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)  # fmt: skip
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", str(src)],
        check=True, cwd=root, env=env,
    )  # fmt: skip
    shutil.rmtree(src)  # nothing may be read from the source copy after the install
    work = root / "elsewhere"
    work.mkdir()
    return python, work, env


def run(installed, *args):
    python, work, env = installed
    return subprocess.run([str(python), "-m", "scoresde", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_recommend_runs_from_a_non_editable_install_outside_the_source_tree(installed):
    res = run(installed, "recommend", "--nfe", "10")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("Best samplers at <= 10 NFE"), lines[0]  # a full table: no warning
    assert "site-packages" in lines[1] and "benchmark_results" in lines[1], lines[1]
    assert lines[-2].lstrip().startswith("x = S.sample(") and lines[-2].rstrip().endswith(".x")
    assert lines[-1].lstrip().startswith("python -m scoresde sample ")


def test_recommend_errors_are_one_line_with_exit_status_2_when_installed(installed):
    res = run(installed, "recommend", "--nfe", "10", "--problem", "nope")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: problem must be one of")
