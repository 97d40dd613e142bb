"""The demo runs end to end on a small configuration: a row per sampler and step count, a PNG."""

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
