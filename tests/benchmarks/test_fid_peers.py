"""Peers and the per-cell feature cache of the steps-vs-FID table, on the tiny model.

Properties: a peer cell scores the same FID as the scoresde sampler that does the same
arithmetic (same prior draws, same ending, same NFE); every peer counts its model calls within
the budget and ends as documented (``denoise_final`` = the model's x0 at ``t_min`` of the state
the ``t_min`` ending returns); the features of every cell are kept, and re-scoring a table
against other reference statistics reads them instead of sampling.
"""

import json

import numpy as np
import pytest
import torch

import scoresde as S
from benchmarks import fid_peers as P
from benchmarks import fid_table as T
from benchmarks.fid_cache import features_path
from benchmarks.fid_summary import summary
from benchmarks.fid_vs_steps import main
from benchmarks.peers import diffusers_available, k_diffusion_available
from benchmarks.plot import plot_fid
from scoresde.metrics import FeatureStats, InceptionFeatures, fid
from tests.benchmarks.test_scripts import tiny_model
from tests.metrics.fid_helpers import write_tiny_feature_net

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.skipif(not (diffusers_available() and k_diffusion_available()),
                       reason="the peers need diffusers and k-diffusion installed"),
]  # fmt: skip

CPU = torch.device("cpu")


@pytest.fixture
def scoring(tmp_path):
    extractor = InceptionFeatures(write_tiny_feature_net(tmp_path / "tiny.pt"))
    reference = FeatureStats.of(torch.rand(40, 32, generator=torch.Generator().manual_seed(0)))
    return extractor, reference


def _peer_grid_of(key, model, n_steps):
    """Our grid and sampler options that match a peer's arithmetic (its levels as times)."""
    if key == "k-diffusion:dpmpp_2m":  # Karras levels, no lowered order at the end
        return S.Karras(7.0), n_steps - 1, {"lower_order_final": False}
    sched = P._scheduler(P.PEERS[key], model.denoiser.sde)
    sched.set_timesteps(n_steps)
    ts = P._level_time(model.denoiser.sde, sched.sigmas.double())
    # the peer's last step is first order (euler_at_final), as lower_order_final=True makes ours
    # below 10 steps (the budgets here; above, ours keeps order 2 with lower_order_final=True)
    return S.Explicit(ts), None, {"lower_order_final": True}


@pytest.mark.parametrize("key", ["k-diffusion:dpmpp_2m", "diffusers:dpmpp_2m"])
@pytest.mark.parametrize("budget", [5, 10])
def test_peer_cell_scores_the_fid_of_our_matching_sampler(scoring, key, budget):
    """k-diffusion's ``sample_dpmpp_2m`` on Karras levels + its step to 0, and diffusers'
    ``DPMSolverMultistepScheduler`` (2M) run to ``t_min`` + x0, are DPM-Solver++(2M) with a
    final x0, as is ``dpm_solver_pp_2m`` on the same levels: same prior draws, same NFE. The
    samples then differ by float32 rounding only (the peers' float32 noise levels and schedule
    tables, relative ~1e-7, through <= 20 steps: measured <= 2e-6 on samples of size ~3); the
    tiny feature net is smooth, so features differ by ~1e-6 and the FID (~1 here) by the same
    relative amount: we assert 1e-4 relative, and features to 1e-4 absolute."""
    extractor, reference = scoring
    model = tiny_model()
    kw = dict(n=12, batch_size=5, seed=0, device=CPU)
    rows = T.fid_table(model, extractor, reference, samplers=[], peers=[key], nfes=(budget,),
                       grid="default", reference_sampler="ancestral", reference_steps=0,
                       log=lambda m: None, **kw)  # fmt: skip
    [row] = rows
    assert (row["role"], row["family"], row["nfe"]) == ("peer", key.split(":")[0], budget)
    assert row["grid"] == P.peer_grid(key) and row["ending"] == "denoise_final"
    n_steps = row["n_steps"]
    grid, ours_steps, options = _peer_grid_of(key, model, n_steps)
    sampler = S.get_sampler("dpm_solver_pp_2m", **options)
    run = T.ours(sampler, model.denoiser, grid, ours_steps, True)
    feats, nfe, _ = T.cell_features(model, run, extractor, **kw)
    assert nfe == budget
    peer_feats, _, _ = T.cell_features(
        model, P.peer_run(key, model.denoiser, n_steps, "denoise_final"), extractor, **kw
    )
    torch.testing.assert_close(peer_feats, feats, rtol=0, atol=1e-4)
    assert row["fid"] == pytest.approx(fid(FeatureStats.of(feats), reference), rel=1e-4)


@pytest.mark.parametrize("key", sorted(P.PEERS))
def test_peers_count_model_calls_within_the_budget_and_end_as_documented(key):
    """Measured calls == the count the budget rule uses, <= the budget, and one more step would
    not fit; ``denoise_final`` returns the model's x0 at ``t_min`` of the state the ``t_min``
    ending reaches with the same steps (exact: the same operations on the same inputs, and the
    same noise draws for the stochastic peers, which draw none on the final step)."""
    den = tiny_model().denoiser
    x_T = den.sde.prior_sample((3, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    for budget in (5, 10):
        for ending in T.ENDINGS:
            n = P.peer_steps(key, budget, ending)
            if key == "diffusers:euler_ancestral" and ending == "t_min":
                assert n is None  # its scheduler always ends at sigma = 0
                continue
            _, calls = P.peer_run(key, den, n, ending)(x_T, torch.Generator().manual_seed(2))
            assert calls == P._calls(P.PEERS[key], n, ending) <= budget
            assert (P._calls(P.PEERS[key], n + 1, ending) or budget + 1) > budget
    if key == "diffusers:euler_ancestral":
        return
    n = P.peer_steps(key, 10, "t_min")
    x_end, _ = P.peer_run(key, den, n, "t_min")(x_T, torch.Generator().manual_seed(2))
    x0, calls = P.peer_run(key, den, n, "denoise_final")(x_T, torch.Generator().manual_seed(2))
    assert calls == P._calls(P.PEERS[key], n, "t_min") + 1
    torch.testing.assert_close(x0, den.x0(x_end, den.sde.t_min), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", [k for k in sorted(P.PEERS) if P.PEERS[k].stochastic])
def test_stochastic_peers_draw_their_noise_from_the_batch_generator(key):
    den = tiny_model().denoiser
    x_T = den.sde.prior_sample((3, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    run = P.peer_run(key, den, P.peer_steps(key, 6, "denoise_final"), "denoise_final")
    a, b, c = (run(x_T, torch.Generator().manual_seed(s))[0] for s in (2, 2, 3))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_discrete_form_has_the_models_levels_at_every_train_step():
    """diffusers reads the betas back as the schedule whose train step n sits at
    t_n = t_min + (T - t_min) n / 999 with the continuous model's alpha(t_n)^2."""
    from scoresde.adapters import discrete_sde_from_config

    sde = S.VPSDE()
    betas = P.discrete_betas(sde)
    disc = discrete_sde_from_config({"num_train_timesteps": 1000, "trained_betas": betas})
    t = torch.linspace(sde.t_min, sde.T, 1000, dtype=torch.float64)
    torch.testing.assert_close(disc.alphas_cumprod, sde.alpha(t) ** 2, rtol=1e-12, atol=0)
    assert P.discrete_betas(disc) is disc.betas


def test_feature_cache_rescores_against_other_statistics_without_sampling(
    scoring, tmp_path, monkeypatch
):
    extractor, reference = scoring
    other = FeatureStats.of(torch.rand(30, 32, generator=torch.Generator().manual_seed(5)))
    folder = tmp_path / "fid_cells"
    kw = dict(samplers=["ddim"], peers=["k-diffusion:heun"], nfes=(3, 5), grid="default",
              reference_sampler="ancestral", reference_steps=4, n=8, batch_size=4, seed=[0, 1],
              device=CPU, log=lambda m: None, features=folder,
              cache=tmp_path / "cells.jsonl")  # fmt: skip
    first = T.fid_table(tiny_model(), extractor, reference, context={"ckpt": "a",
                        "reference": "r1"}, **kw)  # fmt: skip
    assert len(list(folder.glob("*.npz"))) == len(first) == 2 * 2 * 2 + 1

    def no_sampling(*args, **kwargs):
        raise AssertionError("a cell was sampled again")

    monkeypatch.setattr(T, "cell_features", no_sampling)
    again = T.fid_table(tiny_model(), extractor, other, context={"ckpt": "a",
                        "reference": "r2"}, **kw)  # fmt: skip
    assert [r["nfe"] for r in again] == [r["nfe"] for r in first]
    for row in again:
        label = {k: row[k] for k in ("role", "sampler", "grid", "ending", "seed", "nfe_budget")}
        key = json.dumps({**label, "n_steps": row["n_steps"], "n": 8, "batch_size": 4,
                          "context": {"ckpt": "a"}}, sort_keys=True)  # fmt: skip
        with np.load(features_path(folder, key)) as f:
            assert row["fid"] == fid(FeatureStats.of(f["features"]), other)
    with pytest.raises(AssertionError, match="sampled again"):  # new samples: no reuse
        T.fid_table(tiny_model(), extractor, other, context={"ckpt": "b"}, **kw)


def test_several_references_run_each_on_its_grid(scoring):
    extractor, reference = scoring
    kw = dict(samplers=[], nfes=(), grid="default", n=6, batch_size=3, seed=0, device=CPU,
              log=lambda m: None)  # fmt: skip
    rows = T.fid_table(tiny_model(), extractor, reference,
                       reference_sampler=["euler_maruyama", "edm_heun"], reference_steps=[8, 5], **kw)  # fmt: skip
    em, ode = rows  # stochastic: on uniform time; ODE: on its own default grid (Karras)
    assert (em["sampler"], em["grid"], em["nfe"]) == ("euler_maruyama", "uniform_time", 9)
    assert ode["grid"] == "default: Karras(rho=7.0)"
    assert ode["nfe"] == S.get_sampler("edm_heun").nfe(5) + 1
    assert all(r["ending"] == "denoise_final" for r in rows)
    with pytest.raises(ValueError, match="reference_steps must give one count"):
        T.fid_table(tiny_model(), extractor, reference, reference_sampler=["ancestral", "unipc"],
                    reference_steps=[8, 5, 3], **kw)  # fmt: skip


def test_summary_and_plot_show_peers_apart(tmp_path):
    rows = [
        {"role": role, "family": fam, "sampler": s, "grid": "g", "ending": "denoise_final",
         "seed": seed,
         "nfe_budget": 10, "nfe": 10, "fid": f + seed}
        for role, fam, s, f in (("cell", "scoresde", "x", 30.0), ("peer", "k-diffusion",
                                "k-diffusion:heun", 20.0))
        for seed in (0, 1, 2)
    ]  # fmt: skip
    lines = summary(rows).splitlines()
    assert "| `k-diffusion:heun` (peer) | g | denoise_final | 21.0 ± 1.0 |" in lines
    assert "| **best** | | | `x` 31.0 ± 1.0 |" in lines  # peers are not ranked with ours
    assert "| **best peer** | | | `k-diffusion:heun` 21.0 ± 1.0 |" in lines
    path = plot_fid(rows, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_command_line_lists_the_peers_and_refuses_unknown_ones(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(k in out.replace("\n", " ").replace("  ", "") for k in P.PEERS)
    with pytest.raises(SystemExit):
        main(["--ckpt", "x.pt", "--peers", "diffusers:nope"])
    assert "unknown peer(s) ['diffusers:nope']" in capsys.readouterr().err


def _write_idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(np.array([magic, *array.shape], dtype=">u4").tobytes() + array.tobytes())


def test_commands_into_one_folder_build_one_table_with_every_cell(tmp_path):
    """The full table is several commands (grids, endings, peers) into one ``--out`` folder:
    the folder's TSV shows every finished cell of the same checkpoint, statistics and ``n``,
    and every cell's features are kept under ``fid_cells/``."""
    from benchmarks.common import read_tsv
    from scoresde.checkpoint import FORMAT, atomic_save, sde_to_dict, time_input_to_dict
    from scoresde.models import UNet

    net = UNet(in_channels=1, image_size=8, channels=8, channel_mults=(1, 2),
               attention_resolutions=(4,), groups=4)  # fmt: skip
    atomic_save({"format": FORMAT, "model_config": net.config, "ema": net.state_dict(),
                 "sde": sde_to_dict(S.VPSDE()), "parameterization": "eps",
                 "time_input": time_input_to_dict(S.ContinuousTime())}, tmp_path / "c.pt")  # fmt: skip
    mnist = tmp_path / "data" / "mnist"
    mnist.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    _write_idx(mnist / "train-images-idx3-ubyte", images, 2051)
    _write_idx(mnist / "train-labels-idx1-ubyte", np.zeros(20, dtype=np.uint8), 2049)
    common = ["--ckpt", str(tmp_path / "c.pt"), "--data-dir", str(tmp_path / "data"),
              "--inception", str(write_tiny_feature_net(tmp_path / "tiny.pt")),
              "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
              "--n", "6", "--batch-size", "3", "--ref-n", "20", "--nfe", "3",
              "--reference-steps", "0", "--samplers", "ddim"]  # fmt: skip
    assert main(common) == 0
    assert main([*common, "--ending", "t_min", "--peers", "k-diffusion:dpmpp_2m"]) == 0
    rows = read_tsv(tmp_path / "out" / "fid_vs_steps.tsv")
    assert {(r["role"], r["family"], r["sampler"], r["ending"]) for r in rows} == {
        ("cell", "scoresde", "ddim", "denoise_final"),
        ("cell", "scoresde", "ddim", "t_min"),
        ("peer", "k-diffusion", "k-diffusion:dpmpp_2m", "t_min"),
    }
    assert len(list((tmp_path / "out" / "fid_cells").glob("*.npz"))) == 3
    assert "k-diffusion:dpmpp_2m` (peer)" in (tmp_path / "out" / "fid_vs_steps.md").read_text()
