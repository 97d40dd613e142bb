"""The demo runs end to end on a small configuration: a row per sampler and step count, a PNG."""

import pytest

from scoresde.cli import main
from scoresde.samplers import SAMPLERS


def test_demo_prints_a_row_per_sampler_and_writes_a_png(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert (
        main(["demo", "--n", "200", "--steps", "4", "8", "--out", str(out), "--no-progress"]) == 0
    )
    text = capsys.readouterr().out
    assert out.stat().st_size > 10_000
    for key in SAMPLERS:
        assert key in text
    assert "Monte-Carlo floor" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "nonsense"], "device must be a torch device"),
        (["--out", "demo.jpg"], "out must end in one of"),
        (["--steps", "0"], "n_steps must be an int >= 1"),
        (["--n", "1"], "n_samples must be an int >= 2"),
    ],
)
def test_demo_errors_are_one_line_with_exit_status_2(tmp_path, capsys, argv, message):
    assert main(["demo", "--out", str(tmp_path / "d.png"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
