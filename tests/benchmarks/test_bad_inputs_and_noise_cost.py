"""The bad-input sweep classifies what it claims, and the noise-cost script counts draws.

- ``classify``: an error raised by scoresde with the expected words on one line is ``clear``; the
  same type raised inside numpy, a message without the expected words, a bad input that returns,
  and a valid input that raises are ``other``; a valid input whose result passes its check is
  ``correct``; on the command line, exit status 2 with one ``error:`` line is ``clear``.
- ``noise_cost``: on a tiny state, ``GaussianNoise`` draws no tree node, ``BrownianNoise`` each of
  the 15 inner nodes of a 16-step uniform grid once, torchsde's halfway tree each twice (once
  per child).
"""

import numpy as np

import scoresde as S
from benchmarks import bad_inputs as B
from benchmarks import noise_cost


def kind(fn, *words, fine=False, check=None):
    c = B.Case("t", "t", fn, words, fine, check)
    B.classify(c)
    return c.kind


def test_classify_tells_clear_errors_from_the_rest():
    assert kind(lambda: S.VPSDE(beta_min=-1), "beta_min", "-1") == "clear"
    assert kind(lambda: S.VPSDE(beta_min=-1), "beta_max") == "other"  # lacks a word
    assert kind(lambda: np.array("x", dtype=float)) == "other"  # raised inside numpy
    assert kind(lambda: {}["k"]) == "other"  # KeyError
    assert kind(lambda: 1) == "other"  # a bad input accepted
    assert kind(lambda: 1, fine=True, check=lambda r: r == 1) == "correct"
    assert kind(lambda: 1, fine=True, check=lambda r: r == 2) == "other"
    assert kind(lambda: S.VPSDE(beta_min=-1), fine=True) == "other"  # a valid input refused


def test_classify_reads_the_exit_status_and_stderr_of_the_command_line():
    c = B.Case("cli", "t", ["recommend", "--nfe", "0"], ("nfe", "0"), cli=True)
    B.classify(c)
    assert c.kind == "clear", c.detail
    c = B.Case("cli", "t", ["recommend", "--nfe", "x"], ("--nfe", "'x'"), cli=True)
    B.classify(c)
    assert c.kind == "clear", c.detail  # argparse's usage + error lines


def test_noise_cost_counts_the_draws_per_step(monkeypatch):
    monkeypatch.setattr(noise_cost, "SHAPE", (2, 3))
    ts = S.UniformTime().grid(S.VPSDE(), 16)
    _, gaussian = noise_cost.time_source(noise_cost.SOURCES["gaussian"], ts, 16, 1)
    _, brownian = noise_cost.time_source(noise_cost.SOURCES["brownian"], ts, 16, 1)
    _, halfway = noise_cost.time_source(noise_cost.SOURCES["torchsde_halfway"], ts, 16, 1)
    # the 15 inner nodes of a 16-cell dyadic tree, each drawn once (W(T) is drawn at bind)
    assert gaussian == 0 and brownian == 15 / 16 and halfway >= 2 * brownian
