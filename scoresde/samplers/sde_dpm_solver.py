r"""SDE-DPM-Solver: exponential integrators of the reverse SDE in ``lambda_`` (Lu et al. 2022b).

With ``lambda_ = log(alpha / sigma)``, the reverse SDE (Song et al. 2021, eq. 6) has linear part
``d log alpha`` and a model term that these solvers integrate exactly in ``lambda_`` with the
model held constant (first order) or linearly extrapolated (2M), and its noise term integrated
exactly in distribution. For one step from ``t`` to ``t_next`` (``h = lambda_(t_next) -
lambda_(t) > 0``):

* noise prediction:  ``x_next = (alpha_next / alpha_t) x - 2 sigma_next (e^h - 1) eps
  + sigma_next sqrt(e^{2h} - 1) z``;
* data prediction:   ``x_next = (sigma_next / sigma_t) e^{-h} x + alpha_next (1 - e^{-2h}) x0
  + sigma_next sqrt(1 - e^{-2h}) z``.

The data-prediction first-order step is the Gaussian posterior ``q(x_next | x_t, x0)``, i.e. DDPM
ancestral sampling with the posterior variance (Lu et al. 2022b). The multistep data-prediction
solvers take k-diffusion's ``eta``: the SDE ``dx = [f x - (1 + eta)/2 g^2 score] dt
+ sqrt(eta) g dW``, whose step is ``x_next = (sigma_next / sigma_t) e^{-eta h} x
+ alpha_next (1 - e^{-(1+eta) h}) x0 + sigma_next sqrt(1 - e^{-2 eta h}) z`` (``eta = 1``: the
reverse SDE; ``eta = 0``: the probability-flow ODE). ``z`` is the noise source's
increment for the step, so every Brownian path gives one solution. All ``e^{...} - 1`` are
``expm1``: for small ``h`` the difference loses every digit otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..grids import Karras, UniformLambda
from ..utils import check_bool, check_real
from .base import AffineStep, GridSchedule, Sampler
from .lambda_space import lowered_orders, multistep_coefficients, sde_noise_scale

__all__ = ["SDEDPMSolver1", "SDEDPMSolverPP2M", "SDEDPMSolverPP3M"]


class SDEDPMSolver1(AffineStep):
    r"""SDE-DPM-Solver-1: first-order exponential integrator of the reverse SDE, noise prediction.

    ``x_{i+1} = (alpha_{i+1} / alpha_i) x_i - 2 sigma_{i+1} (e^h - 1) eps(x_i, t_i)
    + sigma_{i+1} sqrt(e^{2h} - 1) z_i``, ``h = lambda_{i+1} - lambda_i``.

    **Strong order** 1: with ``dlambda = -g^2 / (2 sigma^2) dt`` the eps coefficient is
    ``h_t g^2 / sigma (1 + O(h))`` and the noise scale ``sqrt(-h_t g^2) (1 + O(h))``: the
    Euler–Maruyama step up to terms that keep its strong order 1 under additive noise. The linear
    part is exact. **Weak order** 1. **NFE per step** 1. **Stochastic** yes.
    **Reference** Lu et al. 2022b (DPM-Solver++, arXiv:2211.01095), SDE-DPM-Solver-1; diffusers'
    ``algorithm_type="sde-dpmsolver"``, first order.

    **Few steps.** In noise-prediction form the step's noise has standard deviation
    ``sigma_{i+1} sqrt(e^{2h} - 1)``, about ``sigma_i alpha_{i+1} / alpha_i`` for large ``h``: a
    long step re-noises the state to the noise level it started from and relies on one ``eps``
    evaluation, weighted by ``2 sigma_{i+1} (e^h - 1)``, to remove it again. Both weights grow
    like ``e^h``, so a long step at high noise amplifies the model's error: on the ring mixture
    of ``python -m scoresde demo`` at 5 steps (``h ~ 1.9``) a logSNR-uniform grid gives a sliced
    Wasserstein distance of 24 (0.1-0.3 for the other samplers), a time-uniform grid 2.5 and
    Karras' grid 0.5; from 10 steps on all three are at the Monte-Carlo floor. There is no lower
    order to fall back on; use 10 or more steps, or the data-prediction forms
    (``ddim_stochastic``, ``sde_dpm_solver_pp_2m``), whose weights stay bounded as ``h`` grows.
    **Default grid** ``Karras()``: short steps at high noise, where the amplification acts.
    """

    name = "sde_dpm_solver_1"
    order = 1
    weak_order = 1
    stochastic = True
    nfe_per_step = 1
    reference = "lu2022dpmsolverpp"
    default_grid = Karras()

    def coefficients(self, s):
        h = s.lambda_[1:] - s.lambda_[:-1]
        c_x = torch.exp(s.alpha[1:].log() - s.alpha[:-1].log())
        c_eps = -2.0 * s.sigma[1:] * torch.expm1(h)
        c_z = s.sigma[1:] * torch.expm1(2.0 * h).sqrt()
        return c_x, c_eps, c_z


class _SDEMultistep(Sampler):
    """Multistep SDE-DPM-Solver++: ``x_{i+1} = a_i x_i + sum_j c_ij x0_{i-j} + s_noise n_i z_i``
    with the coefficients of :func:`multistep_coefficients` at ``eta`` and the noise scale
    ``n_i`` of :func:`sde_noise_scale`."""

    steps: ClassVar[int]  # model outputs the update combines (the multistep order)
    ode_order: ClassVar[int]  # the order with eta = 0 (the probability-flow ODE)
    stochastic = True
    nfe_per_step = 1
    reference = "lu2022dpmsolverpp"
    _d2_weight = 1.0  # k-diffusion's and diffusers' weight of D2 (see multistep_coefficients)

    def __init__(self, *, eta: float = 1.0, s_noise: float = 1.0, lower_order_final: bool = True):
        self.eta = check_real("eta", eta, low=0.0)
        self.s_noise = check_real("s_noise", s_noise, low=0.0)
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)
        if self.eta == 0:  # the probability-flow ODE: DPM-Solver++(2M) / (3M)
            self.stochastic, self.weak_order, self.order = False, None, self.ode_order

    def step_orders(self, n_steps: int) -> list[int]:
        """Orders per step: lower while the history fills, and at the end as
        :func:`lowered_orders` rules (grids of fewer than 10 steps)."""
        return lowered_orders(self.steps, n_steps, self.lower_order_final, warm_up=True)

    def options(self) -> dict[str, Any]:
        return {
            k: v for k, v in vars(self).items() if k not in ("stochastic", "weak_order", "order")
        }

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        orders = self.step_orders(ts.numel() - 1)
        a, c = multistep_coefficients(
            s, orders, "x0", d2_weight=self._d2_weight, eta=self.eta,
            solver_type=self.solver_type,
        )  # fmt: skip
        h = s.lambda_[1:] - s.lambda_[:-1]
        z = self.s_noise * sde_noise_scale(s.sigma[1:], h, self.eta)
        cast = GridSchedule.cast
        # times stay float64: they feed the schedule inside the Denoiser
        return ts.to(x.device), cast(a, x), cast(c, x), cast(z, x), orders, ()

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, a, c, z, orders, history = state
        history = (denoiser.predict(x, t[i]).x0, *history)
        x_next = a[i] * x
        for j in range(orders[i]):
            x_next = x_next + c[i, j] * history[j]
        if self.eta != 0:
            x_next = x_next + z[i] * noise(ts[i], ts[i + 1], x)
        return x_next, (t, a, c, z, orders, history[: self.steps - 1])


class SDEDPMSolverPP2M(_SDEMultistep):
    r"""SDE-DPM-Solver++(2M): second-order multistep exponential integrator of the reverse SDE,
    data prediction.

    ``x_{i+1} = (sigma_{i+1} / sigma_i) e^{-eta h} x_i + alpha_{i+1} (1 - e^{-H}) x0_i
    + alpha_{i+1} c D1 + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) z_i`` with ``H = (1 + eta) h``,
    ``D1 = (x0_i - x0_{i-1}) / r``, ``r = h_{i-1} / h_i``, and ``c = (1 - e^{-H}) / 2``
    (``solver_type="midpoint"``) or ``c = 1 - (1 - e^{-H}) / H`` (``"heun"``). The first step,
    and with ``lower_order_final`` the last on every grid, use ``D1 = 0``
    (SDE-DPM-Solver++(1)): on grids whose last step in ``lambda_`` is long (uniform in ``t`` on
    VP, ``r`` small) extrapolating across it amplifies the noise of ``x0_{i-1}`` (sliced
    Wasserstein on ``gmm_2d`` at 16 uniform-``t`` steps: 0.047 with it, 0.25 without).
    ``eta = 1`` is Lu et al.'s SDE-DPM-Solver++(2M).

    **Strong order** 1: along an SDE path ``x0(x_t, t)`` varies by ``O(h^{1/2})`` within a step
    (it follows the Brownian motion), so no extrapolation from past evaluations removes the
    ``O(h^{3/2})`` mean-zero local error; the linear and noise terms are exact.
    **Weak order** 2 (measured on Gaussian and Gaussian-mixture data, both solver types). The
    extrapolation ``D1`` from the realised previous step is what makes it so: given ``x_i``, the
    previous increment carries the time-reversed drift, and in the weak Taylor expansion of a step
    the terms it adds (``x0'`` times that drift, ``x0''`` times the increment's variance) cancel
    the ``O(h^2)`` terms of the exact transition after integration by parts against ``p_t`` (as
    for the stochastic Adams–Bashforth-2 method with additive noise). ``s_noise != 1`` changes
    the noise on purpose and leaves a bias that does not vanish. With ``eta = 0`` it is the
    probability-flow ODE solver DPM-Solver++(2M), order 2, not stochastic. **NFE per step** 1.
    **Stochastic** yes (for ``eta > 0``).
    **Reference** Lu et al. 2022b (DPM-Solver++, arXiv:2211.01095), SDE-DPM-Solver++(2M);
    k-diffusion's ``sample_dpmpp_2m_sde``; diffusers' ``algorithm_type="sde-dpmsolver++"``,
    ``solver_order=2``.

    Args:
        eta: strength of the SDE (``>= 0``; 1 is the reverse SDE, 0 the probability-flow ODE).
        s_noise: factor on the injected noise (``>= 0``; 1 for a convergent sampler).
        solver_type: ``"midpoint"`` (k-diffusion's default) or ``"heun"``: the two second-order
            forms of Lu et al. 2022b, equal up to ``O(h^3)`` per step.
        lower_order_final: take the last step with first order (False: k-diffusion's and
            diffusers' ``lower_order_final=False`` behaviour).
    """

    name = "sde_dpm_solver_pp_2m"
    order = 1
    weak_order = 2
    steps = ode_order = 2

    def __init__(
        self,
        *,
        eta: float = 1.0,
        s_noise: float = 1.0,
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
    ):
        if solver_type not in ("midpoint", "heun"):
            raise ValueError(
                f"solver_type must be 'midpoint' or 'heun' for {self.name!r}; got {solver_type!r}"
            )
        self.solver_type = solver_type
        super().__init__(eta=eta, s_noise=s_noise, lower_order_final=lower_order_final)

    def step_orders(self, n_steps: int) -> list[int]:
        orders = lowered_orders(self.steps, n_steps, False, warm_up=True)
        if self.lower_order_final:  # on every grid: see the class docstring
            orders[-1] = 1
        return orders


class SDEDPMSolverPP3M(_SDEMultistep):
    r"""SDE-DPM-Solver++(3M): third-order multistep exponential integrator of the reverse SDE,
    data prediction.

    ``x_{i+1} = (sigma_{i+1} / sigma_i) e^{-eta h} x_i - alpha_{i+1} (p1 x0_i + p2 D1 + p3 D2)
    + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) z_i`` with ``p1 = e^{-H} - 1``,
    ``p2 = p1 / (-H) - 1``, ``p3 = p2 / (-H) - 1/2``, ``H = (1 + eta) h``, and the divided
    differences ``D1 ~ h x0'``, ``D2 ~ h^2 x0'' / 2`` of ``x0_i, x0_{i-1}, x0_{i-2}`` (see
    :func:`~scoresde.samplers.lambda_space.multistep_coefficients`; ``D2`` carries weight ``p3``
    as in k-diffusion and Lu et al.'s code). Steps 0 and 1 use orders 1 and 2 while the history
    fills (the second-order step in the Taylor form ``p2 D1``, k-diffusion's); with
    ``lower_order_final`` on grids of fewer than 10 steps the last two use 2 and 1.

    **Strong order** 1 (as SDE-DPM-Solver++(2M): ``x0`` follows the Brownian motion within a
    step). **Weak order** 2 (measured; the third-order terms do not raise it, since ``x0`` along
    the noisy path is not smooth in time). Use it on grids whose steps in ``lambda_`` vary slowly
    (``UniformLambda``, ``Karras``, as k-diffusion does): the divided differences amplify the
    noise of past ``x0``'s by ``~1 / (r0 (r0 + r1))``, and on a uniform-in-``t`` VP grid, whose
    last steps in ``lambda_`` grow fast, the samples are then worse at 64 steps than at 8 (sliced
    Wasserstein 0.105 vs 0.056 on ``gmm_2d``) and the orders show only beyond ~1000 steps. With ``eta = 0`` it is DPM-Solver++(3M) with ``D2`` weight ``p3``, order 2 (see
    :class:`~scoresde.samplers.DPMSolverPP3M`, ``variant="reference"``). **NFE per step** 1.
    **Stochastic** yes (for ``eta > 0``). **Default grid** ``UniformLambda()`` (above; on the
    uniform-in-t grid its weak bias is 40x DDPM's posterior step's from 10 steps on).
    **Reference** Lu et al. 2022b (DPM-Solver++, arXiv:2211.01095), multistep third-order update
    with the SDE's linear part; k-diffusion's ``sample_dpmpp_3m_sde``.

    Args:
        eta: strength of the SDE (``>= 0``; 1 is the reverse SDE, 0 the probability-flow ODE).
        s_noise: factor on the injected noise (``>= 0``; 1 for a convergent sampler).
        lower_order_final: on grids of fewer than 10 steps use orders 2 and 1 on the last two
            steps.
    """

    name = "sde_dpm_solver_pp_3m"
    order = 1
    weak_order = 2
    steps = 3
    ode_order = 2
    solver_type = "heun"  # the warm-up's second-order step, as in k-diffusion: p2 D1
    # its divided differences need slowly varying steps in lambda_ (docstring): on a uniform-t
    # grid its weak bias jumps 40x at 10 steps, where the lowered final orders stop
    default_grid = UniformLambda()
