"""Parity with diffusers' schedulers: same DDPM-linear schedule, same timesteps, same exact model.

Property: for each case below, ``scoresde.sample(key, ...)`` on the grid that
:class:`~scoresde.DiscreteSpacing` builds for the scheduler's ``timestep_spacing`` reproduces
diffusers' loop ``for t in scheduler.timesteps: x = scheduler.step(model(x, t), t, x).prev_sample``
started from the same ``x_T``, with the same number of model calls (``PNDMScheduler`` makes one
more: its last step goes from train step 0 to ``alphas_cumprod[0]``, a no-op). The model is the
closed-form ``eps`` of the 2-D Gaussian mixture ``gmm_2d`` under the schedule the scheduler uses
(``tests/parity/diffusers_loop.py``); everything is float64.

How the final step maps (``docs/samplers-multistep.md`` has the full table): a final noise level of
zero (``final_sigmas_type="zero"``, DDIM's ``set_alpha_to_one``) is our ``denoise_final=True``;
diffusers counts that jump as the (first-order) final step of ``lower_order_final``, so on our grid,
which stops before it, the matching option is ``lower_order_final=False``. DEIS and DPM-Solver
lower the order near the end below 15 steps only, as ours do with ``lower_order_final=True`` (our
default ``"auto"`` decides from the grid's geometry instead); diffusers' UniPC does it at every step
count (ours below 15 steps, see ``UniPC``), so its ``final_sigmas_type="sigma_min"`` cases use
10 steps and ``lower_order_final=True``.

Tolerances. (1) With diffusers' schedule tables upcast to float64 (``upcast``) both sides do the
same float64 arithmetic in a different order: rounding of ``1e-16`` per operation, amplified by the
at most ``~1e2`` condition of the order-3 interpolation weights over ``<= 60`` operations, stays
below ``1e-12``; we assert ``1e-10``. (2) With diffusers' own float32 tables (relative rounding
``6e-8`` of ``sigma``), the per-step coefficients, built from differences of ``lambda_`` over steps
``h >= 0.1``, carry relative errors ``<= 6e-8 * 3 / h ~ 2e-6``; the issue's bound ``1e-5`` holds
with that margin. ``DPMSolverMultistepScheduler.step`` casts the state to float32 in every step
(``sample.to(torch.float32)`` in diffusers 0.42), so its cases get the float32 bound in both modes:
``<= 20`` steps of relative rounding ``6e-8`` each, ``~1e-6``.

Cases for ``ddim`` and ``dpm_solver_pp_*`` run once those keys are registered (another branch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS
from tests.helpers import gmm_2d

diffusers = pytest.importorskip(
    "diffusers", reason="parity with diffusers needs diffusers installed"
)

# diffusers 0.42 mixes torch tensors into numpy 2 calls, which warns; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")

from tests.parity.diffusers_loop import (  # noqa: E402
    model_times,
    run_diffusers,
    run_scoresde,
    schedule_of,
)


@dataclass(frozen=True)
class Case:
    id: str
    key: str
    scheduler: str
    config: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    num_inference_steps: int = 10
    spacing: str = "linspace"
    final: str = "t_min"  # DiscreteSpacing's final; "zero" pairs with denoise_final
    denoise_final: bool = False
    points: str = "m"  # our n_steps: "m" (= num_inference_steps) or "m-1"
    extra_nfe: int = 0  # diffusers' model calls beyond ours
    float32_state: bool = False  # diffusers rounds the state to float32 in every step


CASES = [
    Case("deis_3", "deis_3", "DEISMultistepScheduler", {"solver_order": 3},
         {"lower_order_final": True}),
    Case("deis_3-20", "deis_3", "DEISMultistepScheduler", {"solver_order": 3},
         {"lower_order_final": False}, num_inference_steps=20),
    Case("deis_2-leading", "deis_2", "DEISMultistepScheduler", {"timestep_spacing": "leading"},
         {"lower_order_final": True}, spacing="leading"),
    Case("unipc", "unipc", "UniPCMultistepScheduler", {}, {"lower_order_final": False},
         final="zero", denoise_final=True, points="m-1"),
    Case("unipc-trailing", "unipc", "UniPCMultistepScheduler", {"timestep_spacing": "trailing"},
         {"lower_order_final": False}, spacing="trailing", final="zero", denoise_final=True,
         points="m-1"),
    Case("unipc-3-bh1", "unipc", "UniPCMultistepScheduler",
         {"solver_order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min"},
         {"solver_order": 3, "variant": "bh1", "lower_order_final": True}),
    Case("unipc-eps", "unipc", "UniPCMultistepScheduler",
         {"predict_x0": False, "final_sigmas_type": "sigma_min"},
         {"predict_x0": False, "lower_order_final": True}),
    Case("pndm", "pndm", "PNDMScheduler", {}, {}, spacing="leading", points="m-1", extra_nfe=1),
    Case("pndm-50", "pndm", "PNDMScheduler", {}, {}, num_inference_steps=50, spacing="leading",
         points="m-1", extra_nfe=1),
    Case("plms", "plms", "PNDMScheduler", {"skip_prk_steps": True}, {}, spacing="leading",
         points="m-1", extra_nfe=1),
    Case("ddim", "ddim", "DDIMScheduler", {"clip_sample": False}, {}, spacing="leading",
         denoise_final=True, points="m-1"),
    Case("dpm_solver_pp_2m", "dpm_solver_pp_2m", "DPMSolverMultistepScheduler", {},
         {"lower_order_final": False}, final="zero", denoise_final=True, points="m-1",
         float32_state=True),
    Case("dpm_solver_pp_3m", "dpm_solver_pp_3m", "DPMSolverMultistepScheduler",
         {"solver_order": 3}, {"lower_order_final": False, "variant": "reference"},
         num_inference_steps=20, final="zero", denoise_final=True, points="m-1",
         float32_state=True),
]  # fmt: skip


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("float64", [True, False], ids=["float64-tables", "float32-tables"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sampler_reproduces_diffusers_scheduler(case, float64, x_T):
    if case.key not in SAMPLERS:
        pytest.skip(f"sampler {case.key!r} is not registered on this branch (written elsewhere)")
    scheduler = getattr(diffusers, case.scheduler)(**case.config)
    sde = schedule_of(scheduler)
    data = gmm_2d()
    x_ref, nfe_ref = run_diffusers(
        scheduler, data, sde, x_T.clone(), case.num_inference_steps, float64=float64
    )
    m = case.num_inference_steps
    n_steps = m if case.points == "m" else m - 1
    ts = S.DiscreteSpacing(case.spacing, final=case.final).grid(sde, n_steps)
    x, nfe = run_scoresde(
        case.key, case.options, data, sde, x_T.clone(), ts, denoise_final=case.denoise_final
    )
    rel = ((x - x_ref).norm() / x_ref.norm()).item()
    tol = 1e-10 if float64 and not case.float32_state else 1e-5
    assert rel <= tol, f"{case.id}: relative difference {rel:.3e} > {tol:.0e}"
    assert nfe + case.extra_nfe == nfe_ref, f"{case.id}: {nfe} NFE, diffusers {nfe_ref}"


SPACING_SCHEDULERS = [
    ("DEISMultistepScheduler", "t_min"),
    ("UniPCMultistepScheduler", "zero"),
    ("DPMSolverMultistepScheduler", "zero"),
]


@pytest.mark.parametrize("kind", S.DiscreteSpacing.KINDS)
@pytest.mark.parametrize("name,final", SPACING_SCHEDULERS, ids=[s[0] for s in SPACING_SCHEDULERS])
def test_discrete_spacing_reproduces_diffusers_timesteps(name, final, kind):
    """Exactly the train steps diffusers visits (then train step 0 for ``sigma_min``)."""
    sde = S.DiscreteVPSDE.linear()
    for m in (2, 3, 7, 10, 13, 20, 25, 50, 100, 250):
        for offset in (0, 1) if kind == "leading" else (0,):
            scheduler = getattr(diffusers, name)(timestep_spacing=kind, steps_offset=offset)
            scheduler.set_timesteps(m)
            steps = scheduler.timesteps.tolist() + ([0] if final == "t_min" else [])
            n_steps = m if final == "t_min" else m - 1
            ours = S.DiscreteSpacing(kind, steps_offset=offset, final=final).grid(sde, n_steps)
            torch.testing.assert_close(ours, model_times(sde, steps), rtol=0, atol=0)


def test_ddim_and_pndm_timesteps_are_final_t_min_with_one_step_less():
    """``DDIMScheduler`` / ``PNDMScheduler`` visit ``m`` steps including train step 0."""
    sde = S.DiscreteVPSDE.linear()
    for kind in ("leading", "linspace"):
        for m in (5, 10, 50):
            ddim = diffusers.DDIMScheduler(timestep_spacing=kind)
            ddim.set_timesteps(m)
            ours = S.DiscreteSpacing(kind).grid(sde, m - 1)
            torch.testing.assert_close(ours, model_times(sde, ddim.timesteps.tolist()))
