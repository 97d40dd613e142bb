"""``Optimized`` fits on any network within the budget it is given.

- A float32 convolutional network (what users have) is fitted without a dtype error: the prior
  draws and every run take the network's dtype.
- The whole fit, reference included, spends at most ``max_nfe`` network calls, as counted by the
  Denoiser; ``cost`` is that bound; ``patience`` ends a search that stopped improving.
- ``progress=True`` shows a bar; a start grid warm-starts the search, and the result is never worse
  on the fitting draws than that start.
"""

import pytest
import torch

import scoresde as S


class TinyConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=0.1, generator=torch.Generator().manual_seed(0))

    def forward(self, x, t):
        return self.conv(x) * torch.sigmoid(t)[:, None, None, None]


@pytest.fixture
def conv_denoiser():
    return S.Denoiser(TinyConv(), S.VPSDE(), "eps")


def test_optimized_fits_a_float32_network_in_its_dtype(conv_denoiser):
    grid = S.Optimized("dpm_solver_pp_2m", conv_denoiser, shape=(2, 1, 4, 4), reference_steps=8,
                       max_evals=6, progress=False)  # fmt: skip
    ts = grid.grid(conv_denoiser.sde, 4)
    assert ts.dtype == torch.float64 and ts.numel() == 5
    assert grid.last_fit["loss"] <= grid.last_fit["loss_start"]
    res = S.sample("dpm_solver_pp_2m", conv_denoiser, shape=(2, 1, 4, 4), grid=grid, n_steps=4,
                   progress=False)  # fmt: skip
    assert res.x.dtype == torch.float32


@pytest.mark.parametrize("max_nfe", [16 + 4, 16 + 4 * 5 + 3])
def test_optimized_spends_at_most_max_nfe_network_calls(conv_denoiser, max_nfe):
    calls = []
    conv_denoiser.net.register_forward_hook(lambda *args: calls.append(1))
    grid = S.Optimized("ddim", conv_denoiser, shape=(2, 1, 4, 4), reference_steps=16,
                       max_nfe=max_nfe, progress=False)  # fmt: skip
    assert grid.cost(4) == max_nfe
    grid.fit(conv_denoiser.sde, 4)
    assert len(calls) == grid.last_fit["nfe"] <= max_nfe
    assert grid.last_fit["n_evals"] == (max_nfe - 16) // 4


def test_optimized_refuses_a_budget_below_the_reference(conv_denoiser):
    grid = S.Optimized("ddim", conv_denoiser, shape=(2, 1, 4, 4), reference_steps=16, max_nfe=19)
    with pytest.raises(ValueError, match="max_nfe=19 cannot pay for the reference"):
        grid.fit(conv_denoiser.sde, 4)


def test_optimized_patience_stops_a_search_that_does_not_improve():
    data = S.GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.5]]), stds=0.3)
    den = data.denoiser(S.VPSDE(), "eps")
    grid = S.Optimized("unipc", den, shape=(8, 2), reference_steps=64, patience=5,
                       max_evals=500, progress=False)  # fmt: skip
    grid.fit(den.sde, 6)
    fit = grid.last_fit
    assert fit["n_evals"] < 500 and fit["loss"] < fit["loss_start"]


def test_optimized_shows_progress_and_warm_starts_from_the_given_grid(capsys):
    data = S.GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.5]]), stds=0.3)
    den = data.denoiser(S.VPSDE(), "eps")
    grid = S.Optimized("deis_2", den, shape=(4, 2), reference_steps=32, start=S.Karras(7.0),
                       max_evals=1, progress=True)  # fmt: skip
    fitted = grid.fit(den.sde, 5)  # one evaluation: the start itself
    torch.testing.assert_close(fitted.grid(den.sde), S.Karras(7.0).grid(den.sde, 5))
    assert "Optimized(deis_2, 5)" in capsys.readouterr().err
