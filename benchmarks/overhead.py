r"""Sampler overhead: the time a sampler spends outside the network, per network call.

With a zero-cost model (it returns a preallocated zero tensor), the wall time of a whole sampling
run divided by its network calls is the sampler's own cost per call (per step for the one-call
methods): coefficient set-up, the update arithmetic, bookkeeping. It is reported

- as a fraction of one forward pass of a small image UNet on the same batch (what the overhead
  adds to a real run), and
- as a ratio against diffusers' scheduler loop and k-diffusion's sampler for the same method on
  the same batch, schedule (DDPM-linear) and step count, measured in the same run.

Every implementation gets the same NFE budget (the most steps that fit it) and a zero
eps-network: ours through ``scoresde.Denoiser`` (conversions included), diffusers' schedulers
converting eps inside ``step``. k-diffusion runs twice: with a zero denoiser (its sampler loop
alone, no conversion at all: the strictest peer) and through the arithmetic of its wrapper for
discrete eps models (input scaling, sigma-to-train-step interpolation, ``x - sigma eps``), what
a user of a DDPM eps-network runs. Each peer row gives "scoresde / peer" for the same network
output: ours on a zero x0-network against k-diffusion's free denoiser, ours on the zero
eps-network against the others. The implementations of one method
are timed in turns, ``--repeats`` rounds after one warm-up; each reports the median of its
rounds, and each ratio is the median over rounds of the ratio within the round (the machine may
be shared: a load that lasts a round weighs on both sides of that round's ratio). Our samplers run through the
public ``scoresde.sample`` with ``progress=False``; k-diffusion with ``disable=True``. Every
state shape of ``--shapes`` is timed in the same run.

    python -m benchmarks.overhead [--device cuda] [--shapes 64x1x28x28 4x4x64x64] [--nfe 50]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

import scoresde as S
from benchmarks import peers
from benchmarks.common import git_revision, result_dir, write_env, write_tsv

# method label -> (scoresde key, diffusers method (benchmarks.peers), k-diffusion sampler, same?)
# "same" is False where only the family matches (one network call per step, first order).
METHODS: dict[str, tuple[str, str | None, str | None, bool]] = {
    "DDIM (= DPM-Solver-1)": ("ddim", "DDIM", "euler", True),
    "DPM-Solver++(2M)": ("dpm_solver_pp_2m", "DPMSolverMultistep++(2M)", "dpmpp_2m", True),
    "DPM-Solver++(3M)": ("dpm_solver_pp_3m", "DPMSolverMultistep++(3M)", None, True),
    "DPM-Solver-2S": ("dpm_solver_2s", None, "dpm_2", False),
    "UniPC": ("unipc", "UniPC(bh2,2)", None, True),
    "DEIS-3": ("deis_3", "DEIS(3)", None, True),
    "PNDM (PLMS)": ("pndm", "PNDM(PLMS)", None, True),
    "Heun (PF-ODE)": ("pf_heun", "Heun", "heun", True),
    "Euler (PF-ODE in t) vs Euler in sigma": ("pf_euler", "Euler", "euler", False),
}
COLUMNS = [
    "method",
    "implementation",
    "sampler",
    "same_method",
    "n_steps",
    "nfe",
    "batch",
    "shape",
    "time_per_nfe_s",
    "fastest_per_nfe_s",
    "fraction_of_model_forward",
    "ratio_vs_scoresde",
    "scoresde_vs_peer",
    "model",
]


def small_unet(shape: Sequence[int]) -> tuple[nn.Module, str]:
    """The network whose forward time is the yardstick: the project's UNet in the configuration
    of the committed MNIST checkpoint (``benchmarks/checkpoints/README.md``), sized for ``shape``."""
    from scoresde.models import UNet

    c, size = shape[0], shape[-1]
    attention = (size // 4,) if size % 4 == 0 else ()
    net = UNet(in_channels=c, image_size=size, channels=32, channel_mults=(1, 2, 2),
               num_res_blocks=1, attention_resolutions=attention)  # fmt: skip
    n_params = sum(p.numel() for p in net.parameters())
    return net, f"scoresde.models.UNet ({n_params / 1e6:.2f} M params, MNIST checkpoint config)"


def _timed_once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _timeit(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    _timed_once(fn, device)  # warm-up: first-call allocations, lazy imports, cudnn autotuning
    return min(_timed_once(fn, device) for _ in range(repeats))


def _interleaved(fns: Sequence[Callable[[], object]], repeats: int, device) -> list[list[float]]:
    """``repeats`` timings of each function (one list per function), taken in turns (one of
    each per round), so a load that comes and goes on a shared machine weighs on all of them
    alike and each round gives a paired comparison."""
    for fn in fns:
        _timed_once(fn, device)  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            times[k].append(_timed_once(fn, device))
    return times


def measure(
    *,
    batch: int = 64,
    shape: Sequence[int] = (1, 28, 28),
    nfe: int = 50,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    methods: Sequence[str] | None = None,
    peers_enabled: bool = True,
) -> tuple[list[dict], float, str]:
    """Rows of overhead per network call for each method and implementation, the model's forward
    time and its description. Each implementation gets the most steps that fit ``nfe`` calls;
    the implementations of one method are timed in turns, ``repeats`` rounds; each time is the
    median of its rounds, and each ratio the median of the rounds' paired ratios."""
    device = torch.device(device)
    shape = tuple(shape)
    sde = S.DiscreteVPSDE.linear()
    gen = torch.Generator(device="cpu").manual_seed(0)
    x_T = torch.randn((batch, *shape), generator=gen).to(device)
    zeros = torch.zeros_like(x_T)
    net, model_desc = small_unet(shape)
    net = net.to(device).eval()
    t_in = torch.full((batch,), 0.5, device=device)
    with torch.inference_mode():
        forward_s = _timeit(lambda: net(x_T, t_in), min(repeats, 3), device)

    rows = []
    for label in METHODS if methods is None else methods:
        runs = _runs(label, sde, x_T, zeros, nfe, device, peers_enabled, gen)
        if not runs:
            continue
        base = {
            "method": label,
            "same_method": METHODS[label][3],
            "batch": batch,
            "shape": "x".join(map(str, shape)),
            "model": model_desc,
        }
        times = _interleaved([r[-1] for r in runs], repeats, device)
        rounds = {r[0]: torch.tensor(t) / r[3] for r, t in zip(runs, times, strict=True)}
        per = {k: float(v.median()) for k, v in rounds.items()}
        same_model = {"k-diffusion": "scoresde (x0 network)"}  # the others consume eps
        for impl, name, steps, calls, _ in runs:
            ours = rounds[same_model.get(impl, "scoresde")]
            peer = not impl.startswith("scoresde")
            rows.append(
                {
                    **base,
                    "implementation": impl,
                    "sampler": name,
                    "n_steps": steps,
                    "nfe": calls,
                    "time_per_nfe_s": per[impl],
                    "fastest_per_nfe_s": float(rounds[impl].min()),
                    "fraction_of_model_forward": per[impl] / forward_s,
                    "ratio_vs_scoresde": per[impl] / per["scoresde"],
                    # the median of the rounds' paired ratios
                    "scoresde_vs_peer": float((ours / rounds[impl]).median()) if peer else None,
                }
            )
    return rows, forward_s, model_desc


def _runs(label, sde, x_T, zeros, nfe, device, peers_enabled, gen) -> list[tuple]:
    """``(implementation, sampler, steps, network calls, run)`` of each implementation of
    ``label`` on the zero networks (empty if scoresde lacks the sampler or the budget is too
    small for it)."""
    from benchmarks.exact_error import steps_for_budget

    key, dname, kname, _ = METHODS[label]
    if key not in S.SAMPLERS:
        return []
    sampler = S.get_sampler(key)
    n = steps_for_budget(sampler, nfe)
    if n is None:  # adaptive, or more calls per step than the budget
        return []

    def ours(parameterization):
        den = S.Denoiser(lambda x, t: zeros, sde, parameterization)
        return lambda: S.sample(sampler, den, x_T=x_T, n_steps=n, progress=False, generator=gen)

    runs = [("scoresde", key, n, sampler.nfe(n), ours("eps"))]
    if peers_enabled and dname is not None and peers.diffusers_available():
        runs.append(("diffusers", dname, *_diffusers_loop(dname, sde, x_T, zeros, nfe, device)))
    if peers_enabled and kname is not None and peers.k_diffusion_available():
        # k-diffusion's samplers take an x0-denoiser: with a free one they are compared with
        # ours on a zero x0-network (no conversion either side), through its eps wrapper
        # with ours on the zero eps-network
        runs.append(("scoresde (x0 network)", key, n, sampler.nfe(n), ours("x0")))
        for impl, eps_model in (("k-diffusion", False), ("k-diffusion (eps wrapper)", True)):
            loop = _k_diffusion_loop(kname, sde, x_T, zeros, nfe, device, eps_model=eps_model)
            runs.append((impl, kname, *loop))
    return runs


# elementwise arithmetic and reductions: each one a pass over its state-sized input
_STATE_OPS = {
    f"aten::{k}"
    for k in (
        "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "addcmul", "lerp",
        "sum", "isfinite", "all", "copy_", "clamp", "randn_like", "normal_", "pow", "sqrt",
    )
}  # fmt: skip


def profile(
    *, batch: int = 64, shape: Sequence[int] = (1, 28, 28), nfe: int = 50, methods=None
) -> str:
    """Per network call, what each implementation's loop executes (CPU): the tensor operators
    dispatched (``torch.profiler``, every ``aten::`` call, nested ones included: a fused
    operator counts its parts), how many of them are arithmetic passes over a state-sized
    tensor (the ones that cost memory bandwidth), the Python function calls (``cProfile``), and the most frequent
    operators. Counts, not times: they do not depend on the load of the machine. A markdown
    table."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    sde = S.DiscreteVPSDE.linear()
    gen = torch.Generator(device="cpu").manual_seed(0)
    x_T = torch.randn((batch, *shape), generator=gen)
    zeros = torch.zeros_like(x_T)
    lines = [
        f"state {batch}x{'x'.join(map(str, shape))}, {nfe} NFE, zero networks",
        "",
        "| method | implementation | sampler | state-sized arithmetic / NFE | tensor ops / NFE "
        "| Python calls / NFE | most frequent ops / NFE |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label in METHODS if methods is None else methods:
        for impl, name, _, calls, fn in _runs(label, sde, x_T, zeros, nfe, "cpu", True, gen):
            with torch.inference_mode():
                fn()  # warm-up
                with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                    fn()
                ops = [e for e in prof.key_averages() if e.key.startswith("aten::")]
                by_shape = prof.key_averages(group_by_input_shape=True)
                state_ops = sum(
                    e.count
                    for e in by_shape
                    if e.key in _STATE_OPS and list(x_T.shape) in (e.input_shapes or [])
                )
                pr = cProfile.Profile()
                pr.enable()
                fn()
                pr.disable()
            py_calls = sum(v[1] for v in pstats.Stats(pr).stats.values())
            top = sorted(ops, key=lambda e: -e.count)[:6]
            lines.append(
                f"| {label} | {impl} | `{name}` | {state_ops / calls:.1f} "
                f"| {sum(e.count for e in ops) / calls:.1f} | {py_calls / calls:.0f} | "
                + ", ".join(f"{e.key[6:]} {e.count / calls:.1f}" for e in top)
                + " |"
            )
    return "\n".join(lines)


def _diffusers_loop(method, sde, x_T, zeros, nfe, device):
    """(steps, model calls, the scheduler's loop with a zero model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps = peers.diffusers_steps_for_nfe(method, "trailing", sde.betas, nfe)
        sched = peers._scheduler(method, "trailing", sde.betas)
        sched.set_timesteps(steps, device=device)
        calls = len(sched.timesteps)

    def loop():
        sched.set_timesteps(steps, device=device)
        x = x_T
        for t in sched.timesteps:
            sched.scale_model_input(x, t)
            x = sched.step(zeros, t, x).prev_sample
        return x

    return steps, calls, loop


def _k_diffusion_eps_model(sde, zeros):
    """A zero eps-network as a k-diffusion user runs one: k-diffusion's samplers call a
    denoiser ``D(x, sigma)``, and its wrapper for a discrete-time eps model (``external.py``,
    ``DiscreteEpsDDPMDenoiser``) scales the input by ``1 / sqrt(sigma^2 + 1)``, maps sigma to a
    fractional train step by interpolating the log-sigmas of the schedule, and returns
    ``x - sigma eps``. This is that arithmetic (our ``Denoiser`` does the same work for
    ``scoresde``, and diffusers' schedulers convert eps inside ``step``)."""
    abar = torch.exp(2.0 * sde.log_alpha(sde.index_to_t(torch.arange(sde.N, dtype=torch.float64))))
    log_sigmas = (((1 - abar) / abar) ** 0.5).log().to(device=zeros.device, dtype=zeros.dtype)

    def net(x_in, t):
        return zeros

    def denoiser(x, sigma):
        dims = (-1,) + (1,) * (x.ndim - 1)
        c_in = (1 / (sigma**2 + 1) ** 0.5).view(dims)
        log_sigma = sigma.log()
        dists = log_sigma - log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1])).clamp(0, 1)
        eps = net(x * c_in, (1 - w) * low + w * (low + 1))
        return x + eps * (-sigma).view(dims)

    return denoiser


def _k_diffusion_loop(name, sde, x_T, zeros, nfe, device, *, eps_model: bool = False):
    """(steps, model calls, k-diffusion's sampler) on uniform-t levels, with a zero denoiser
    (the sampler loop alone) or, with ``eps_model``, a zero eps-network through k-diffusion's
    wrapper arithmetic (what a user of a DDPM eps-network runs)."""
    K = peers.load_k_diffusion_sampling()
    steps = max(1, nfe // peers.K_DIFFUSION_FIXED[name])
    sigmas = torch.exp(-sde.lambda_(S.UniformTime().grid(sde, steps))).to(
        device=device, dtype=x_T.dtype
    )
    fn = getattr(K, f"sample_{name}")
    model = _k_diffusion_eps_model(sde, zeros) if eps_model else (lambda x, s: zeros)
    return (
        steps,
        steps * peers.K_DIFFUSION_FIXED[name],
        lambda: fn(model, x_T, sigmas, disable=True),
    )


def summary(rows: list[dict], forward_s: float, model_desc: str) -> str:
    lines = [
        f"model forward ({model_desc}), batch {rows[0]['batch'] if rows else '?'}: "
        f"{forward_s * 1e3:.2f} ms",
        "",
        "| method | implementation | sampler | steps | NFE | per NFE (ms), median | fastest "
        "| / model forward | / scoresde | scoresde / peer, same network output |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        vs_peer = r.get("scoresde_vs_peer")
        lines.append(
            f"| {r['method']} | {r['implementation']} | `{r['sampler']}` | {r['n_steps']} "
            f"| {r['nfe']} | "
            f"{r['time_per_nfe_s'] * 1e3:.3f} | {r['fastest_per_nfe_s'] * 1e3:.3f} | "
            f"{r['fraction_of_model_forward']:.4f} | "
            f"{r['ratio_vs_scoresde']:.2f} | {'' if vs_peer is None else f'**{vs_peer:.2f}**'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead", description=__doc__.split("\n\n")[0]
    )
    revision = git_revision()
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=["64x1x28x28", "4x4x64x64"],
        help="states (batch x dims), each timed in the same run",
    )
    parser.add_argument("--nfe", type=int, default=50, help="network calls per run (default 50)")
    parser.add_argument("--repeats", type=int, default=25, help="rounds (default 25)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", help="result folder (default benchmarks/results/<date>_<device>)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing, count the tensor ops and Python calls per NFE of every "
        "implementation (CPU) and write overhead_profile.md",
    )
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(1)
    if args.profile:
        texts = []
        for spec in args.shapes:
            batch, *dims = (int(v) for v in spec.split("x"))
            texts.append(profile(batch=batch, shape=dims, nfe=args.nfe))
        text = "\n\n".join(texts)
        folder = result_dir("cpu", out=args.out)
        (folder / "overhead_profile.md").write_text(
            f"# overhead profile ({folder.name}, {revision})\n\n{text}\n"
        )
        print(text)
        return 0
    start = time.perf_counter()
    rows, texts, forwards = [], [], {}
    for spec in args.shapes:
        batch, *dims = (int(v) for v in spec.split("x"))
        part, forward_s, model_desc = measure(batch=batch, shape=dims, nfe=args.nfe,
                                              repeats=args.repeats, device=args.device,
                                              peers_enabled=not args.no_peers)  # fmt: skip
        rows += part
        forwards[spec] = forward_s
        texts.append(f"### state {spec}\n\n{summary(part, forward_s, model_desc)}")
    wall = time.perf_counter() - start
    folder = result_dir(args.device, out=args.out)
    write_tsv(folder / "overhead.tsv", rows, COLUMNS)
    text = "\n\n".join(texts)
    (folder / "overhead.md").write_text(f"# overhead ({folder.name})\n\n{text}\n")
    write_env(
        folder,
        git_sha=revision,
        device=args.device,
        seeds={"x_T": 0},
        name="env_overhead.txt",
        extra={
            "wall_time_s": f"{wall:.0f}",
            "model_forward_ms": ", ".join(f"{k}: {v * 1e3:.3f}" for k, v in forwards.items()),
        },
    )
    print(text)
    print(f"\nwrote {folder} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
