"""A sweep of bad inputs across the API, the files it reads and the command line, with counts.

Each case is one input a hostile but fair user might give. Its outcome is classified as

* ``clear``: one ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` / ``FloatingPointError``
  raised by scoresde's own code, on one line, whose message holds the case's expected words (the
  argument or file name, and the value where it has a short form); on the command line, exit
  status 2 with one ``error:`` line on stderr (or argparse's usage line and ``error:`` line)
  holding those words;
* ``correct``: the input was fine after all (numpy integers for ``n_steps``, ...) and the result
  passes the case's check;
* ``other``: anything else: an error from deep inside torch / numpy / gzip, another exception
  type, a multi-line message, a message that does not name what is wrong, or a bad input that
  was accepted (a silent wrong answer).

    python -m benchmarks.bad_inputs          # ~1 min of CPU

Prints the counts per kind and every ``other`` case; writes ``bad_inputs.md`` (counts and the
full table) and ``bad_inputs.tsv`` to ``benchmarks/results/<date>_<device>/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import inspect
import io
import math
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import scoresde as S
from benchmarks.common import REPO, git_revision, result_dir, write_env, write_tsv

CLEAR = (ValueError, TypeError, FileNotFoundError, FloatingPointError)
OURS = str(REPO / "scoresde")


@dataclass
class Case:
    area: str
    what: str
    fn: object
    words: tuple = ()  # the message must contain each
    fine: bool = False  # the input is valid: a result is expected, checked by ``check``
    check: object = None
    cli: bool = False
    kind: str = ""
    detail: str = ""
    extra: dict = field(default_factory=dict)


CASES: list[Case] = []


def case(area, what, fn, *words, fine=False, check=None):
    CASES.append(Case(area, what, fn, tuple(words), fine, check))


def cli_case(what, argv, *words):
    CASES.append(Case("cli", what, argv, tuple(words), cli=True))


def _message_ok(message: str, words) -> str:
    if "\n" in message.strip():
        return "message spans several lines"
    missing = [w for w in words if w not in message]
    return f"message lacks {missing}" if missing else ""


def classify(c: Case) -> None:
    if c.cli:
        return _classify_cli(c)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = c.fn()
    except Exception as err:  # noqa: BLE001 (the point is to see what escapes)
        frames = traceback.extract_tb(err.__traceback__)
        origin = frames[-1].filename if frames else "?"
        message = f"{type(err).__name__}: {err}"
        c.detail = message[:300].replace("\n", " | ").replace("\t", " ")
        if c.fine:
            c.kind, c.detail = "other", "valid input refused: " + c.detail
        elif type(err) not in CLEAR:
            c.kind = "other"
        elif not origin.startswith(OURS):
            c.kind, c.detail = "other", f"raised in {Path(origin).name}: " + c.detail
        else:
            why = _message_ok(str(err), c.words)
            c.kind = "other" if why else "clear"
            if why:
                c.detail = why + ": " + c.detail
        return
    if not c.fine:
        c.kind, c.detail = "other", "accepted silently: " + repr(result)[:120]
        return
    try:
        ok = c.check is None or bool(c.check(result))
    except Exception as err:  # noqa: BLE001
        ok, c.detail = False, f"check failed: {type(err).__name__}: {err}"
    c.kind = "correct" if ok else "other"
    if not ok and not c.detail:
        c.detail = "wrong result: " + repr(result)[:120]


def _classify_cli(c: Case) -> None:
    from scoresde.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):  # fmt: skip
            warnings.simplefilter("ignore")
            rc = main(c.fn)
    except SystemExit as exit_:
        rc = exit_.code
    except Exception as exc:  # noqa: BLE001
        c.kind = "other"
        c.detail = f"escaped main(): {type(exc).__name__}: {exc}"[:300].replace("\n", " | ")
        return
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    text = " | ".join(lines)
    c.detail = f"rc {rc}: {text}"[:300].replace("\t", " ")
    argparse_style = len(lines) >= 2 and lines[0].startswith("usage:") and ": error: " in lines[-1]
    one_line = len(lines) == 1 and lines[0].startswith("error: ")
    missing = [w for w in c.words if w not in text]
    c.kind = "clear" if rc == 2 and (one_line or argparse_style) and not missing else "other"
    if c.kind == "other" and missing:
        c.detail = f"message lacks {missing}: " + c.detail


# -- the cases ------------------------------------------------------------------------------------

VP, VE = S.VPSDE(), S.VESDE()
RING = S.ring_mixture().denoiser(VP)


class Linear(torch.nn.Module):
    """A float32 network ``net(x, t)`` with parameters (so its dtype is known)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x, t):
        return self.lin(x)


def net_denoiser(fn, sde=VP):
    return S.Denoiser(fn, sde, "x0")


def run(sampler="ddim", den=RING, **kw):
    kw.setdefault("shape", (4, 2))
    kw.setdefault("n_steps", 3)
    kw.setdefault("progress", False)
    return S.sample(sampler, den, **kw)


def finite(res):
    return torch.isfinite(res.x).all()


def sample_cases():
    a = "sample"
    case(a, "shape=4", lambda: run(shape=4), "shape", "4")
    case(a, "shape=(0, 2)", lambda: run(shape=(0, 2)), "shape", "(0, 2)")
    case(a, "shape=(4, -2)", lambda: run(shape=(4, -2)), "shape", "-2")
    case(a, "shape='4,2'", lambda: run(shape="4,2"), "shape", "'4,2'")
    case(a, "shape=(4, 2.5)", lambda: run(shape=(4, 2.5)), "shape", "2.5")
    case(a, "shape=(4, 3) for a 2-D model", lambda: run(shape=(4, 3)), "shape")
    case(a, "shape of numpy ints", lambda: run(shape=(np.int64(4), np.int32(2))), fine=True,
         check=lambda r: r.x.shape == (4, 2))  # fmt: skip
    case(a, "shape and x_T disagree", lambda: run(shape=(3, 2), x_T=torch.zeros(4, 2)), "shape")
    case(a, "n_steps=0", lambda: run(n_steps=0), "n_steps", "0")
    case(a, "n_steps=-3", lambda: run(n_steps=-3), "n_steps", "-3")
    case(a, "n_steps=2.5", lambda: run(n_steps=2.5), "n_steps", "2.5")
    case(a, "n_steps='10'", lambda: run(n_steps="10"), "n_steps", "'10'")
    case(a, "n_steps=True", lambda: run(n_steps=True), "n_steps", "True")
    case(a, "n_steps=None, no grid", lambda: run(n_steps=None), "n_steps")
    case(a, "n_steps=np.int64(3)", lambda: run(n_steps=np.int64(3)), fine=True, check=finite)
    case(a, "n_steps=10**9", lambda: run(n_steps=10**9), "n_steps")
    case(a, "dtype='float32'", lambda: run(dtype="float32"), "dtype", "'float32'")
    case(a, "dtype=torch.int64", lambda: run(dtype=torch.int64), "dtype", "int64")
    case(a, "generator=0", lambda: run(generator=0), "generator")
    case(a, "generator list of wrong length",
         lambda: run(generator=[torch.Generator()] * 3), "generator", "3")  # fmt: skip
    case(a, "callback=5", lambda: run(callback=5), "callback", "5")
    case(a, "x_T float64 into a float32 net",
         lambda: run(den=net_denoiser(Linear()), x_T=torch.zeros(4, 2, dtype=torch.float64),
                     shape=None), "float64")  # fmt: skip
    case(a, "x_T holds NaN", lambda: run(x_T=torch.full((4, 2), float("nan")), shape=None),
         "x_T")  # fmt: skip
    case(a, "x_T is a list", lambda: run(x_T=[[0.0, 0.0]], shape=None), "x_T")
    case(a, "x_T is 0-d", lambda: run(x_T=torch.tensor(1.0), shape=None), "x_T")
    case(a, "grid=5", lambda: run(grid=5), "grid", "5")
    case(a, "grid='karras'", lambda: run(grid="karras"), "grid", "'karras'")
    case(a, "noise=5", lambda: run("euler_maruyama", noise=5), "noise", "5")
    case(a, "sampler='nope'", lambda: run("nope"), "nope")
    case(a, "sampler=5", lambda: run(5), "sampler", "5")
    case(a, "denoiser a bare function", lambda: S.sample("ddim", lambda x, t: x, shape=(2, 2),
         n_steps=2, progress=False), "denoiser")  # fmt: skip
    case(a, "sde= another process than the denoiser's", lambda: run(sde=VE), "sde")
    case(a, "device='tpu'", lambda: run(device="tpu"), "device", "'tpu'")
    if not torch.cuda.is_available():
        case(a, "device='cuda' without CUDA", lambda: run(device="cuda"), "cuda")
    case(a, "progress='yes'", lambda: run(progress="yes"), "progress", "'yes'")
    case(a, "save_trajectory=1", lambda: run(save_trajectory=1), "save_trajectory", "1")
    case(a, "denoise_final='no'", lambda: run(denoise_final="no"), "denoise_final", "'no'")
    case(a, "invert a stochastic sampler",
         lambda: S.invert("euler_maruyama", RING, torch.zeros(4, 2), n_steps=3,
                          progress=False), "deterministic")  # fmt: skip
    case(a, "invert x0 with NaN", lambda: S.invert("ddim", RING, torch.full((4, 2), math.nan),
         n_steps=3, progress=False), "x0")  # fmt: skip


def _bad_value(name, default):
    if isinstance(default, bool) or (name == "lower_order_final"):
        return "sometimes"
    if isinstance(default, int):
        return -1
    if isinstance(default, float):
        return float("nan")
    if isinstance(default, tuple):
        return (default[1], default[0]) if len(default) == 2 else "bogus"
    return "bogus"


def sampler_cases():
    for key, cls in sorted(S.SAMPLERS.items()):
        case("sampler options", f"{key}(bogus_option=1)",
             lambda key=key: S.get_sampler(key, bogus_option=1), "bogus_option")  # fmt: skip
        params = inspect.signature(cls.__init__).parameters.values()
        for p in params:
            if p.kind is not p.KEYWORD_ONLY:
                continue
            bad = _bad_value(p.name, p.default)
            case("sampler options", f"{key}({p.name}={bad!r})",
                 lambda key=key, n=p.name, v=bad: S.get_sampler(key, **{n: v}), p.name)  # fmt: skip


def sde_grid_noise_cases():
    a = "sde"
    case(a, "VPSDE(beta_min=-1)", lambda: S.VPSDE(beta_min=-1), "beta_min", "-1")
    case(a, "VPSDE(beta_max=nan)", lambda: S.VPSDE(beta_max=math.nan), "beta_max", "nan")
    case(a, "VPSDE(beta_max=1e5)", lambda: S.VPSDE(beta_max=1e5), "beta_max")
    case(a, "VPSDE(beta_min=5, beta_max=1)", lambda: S.VPSDE(beta_min=5.0, beta_max=1.0),
         "beta_max")  # fmt: skip
    case(a, "VPSDE(T=0)", lambda: S.VPSDE(T=0.0), "T")
    case(a, "VPSDE(t_min=2)", lambda: S.VPSDE(t_min=2.0), "t_min")
    case(a, "VPSDE(beta_min='0.1')", lambda: S.VPSDE(beta_min="0.1"), "beta_min", "'0.1'")
    case(a, "SubVPSDE(beta_max=-2)", lambda: S.SubVPSDE(beta_max=-2.0), "beta_max", "-2")
    case(a, "VESDE(sigma_min=0)", lambda: S.VESDE(sigma_min=0.0), "sigma_min", "0")
    case(a, "VESDE(sigma_min=10, sigma_max=1)", lambda: S.VESDE(sigma_min=10.0, sigma_max=1.0),
         "sigma_max")  # fmt: skip
    case(a, "VESDE(sigma_max=inf)", lambda: S.VESDE(sigma_max=math.inf), "sigma_max", "inf")
    case(a, "DiscreteVPSDE('abc')", lambda: S.DiscreteVPSDE("abc"), "betas", "'abc'")
    case(a, "DiscreteVPSDE(2-D betas)", lambda: S.DiscreteVPSDE(torch.full((2, 3), 0.01)),
         "betas", "(2, 3)")  # fmt: skip
    case(a, "DiscreteVPSDE([0.1, 1.5])", lambda: S.DiscreteVPSDE([0.1, 1.5]), "betas", "1.5")
    case(a, "DiscreteVPSDE([0.1])", lambda: S.DiscreteVPSDE([0.1]), "betas")
    case(a, "DiscreteVPSDE([0.1, nan])", lambda: S.DiscreteVPSDE([0.1, math.nan]), "betas")
    case(a, "DiscreteVPSDE.linear(1)", lambda: S.DiscreteVPSDE.linear(1), "n", "1")
    case(a, "DiscreteVPSDE.linear(beta_end=2)",
         lambda: S.DiscreteVPSDE.linear(1000, 1e-4, 2.0), "beta_end", "2")  # fmt: skip
    case(a, "DiscreteVPSDE.cosine(n=0)", lambda: S.DiscreteVPSDE.cosine(0), "n", "0")
    case(a, "RectifiedFlow(t_min=-1)", lambda: S.RectifiedFlow(t_min=-1.0), "t_min", "-1")
    case(a, "VPSDE.alpha('x')", lambda: VP.alpha("x"), "t")

    a = "grid"
    case(a, "Karras(rho=-1)", lambda: S.Karras(rho=-1.0), "rho", "-1")
    case(a, "Karras(rho='7')", lambda: S.Karras(rho="7"), "rho", "'7'")
    case(a, "Explicit not decreasing", lambda: S.Explicit([1.0, 0.5, 0.7]), "ts")
    case(a, "Explicit([])", lambda: S.Explicit([]), "ts")
    case(a, "Explicit with NaN", lambda: S.Explicit([1.0, math.nan, 0.1]), "ts")
    case(a, "Explicit 2-D", lambda: S.Explicit(torch.ones(2, 2)), "ts")
    case(a, "Explicit beyond T", lambda: run(grid=S.Explicit([5.0, 0.5, 0.01]), n_steps=None),
         "5")  # fmt: skip
    case(a, "Explicit below 0", lambda: run(grid=S.Explicit([1.0, 0.5, -0.1]), n_steps=None),
         "-0.1")  # fmt: skip
    case(a, "Quadratic as grid n_steps=0", lambda: S.Quadratic().grid(VP, 0), "n_steps", "0")
    case(a, "UniformTime.grid(sde=5)", lambda: S.UniformTime().grid(5, 4), "sde")
    case(a, "DiscreteSpacing('bogus')", lambda: S.DiscreteSpacing("bogus"), "bogus")
    case(a, "FlowMatchShift(shift=-1)", lambda: S.FlowMatchShift(-1.0), "shift", "-1")
    case(a, "grid_from_config({'name': 'nope'})",
         lambda: S.grid_from_config({"name": "nope"}), "nope")  # fmt: skip
    case(a, "grid_from_config('uniform_time') (a name)",
         lambda: S.grid_from_config("uniform_time"), fine=True,
         check=lambda g: isinstance(g, S.UniformTime))  # fmt: skip
    case(a, "grid_from_config bad option",
         lambda: S.grid_from_config({"name": "karras", "options": {"rho": "x"}}), "rho")  # fmt: skip

    a = "noise"
    case(a, "GaussianNoise(generator=5)", lambda: S.GaussianNoise(5), "generator")
    case(a, "GaussianNoise(['a'])", lambda: S.GaussianNoise(["a"]), "generator[0]", "'a'")
    case(a, "BrownianNoise(seed=-1)", lambda: S.BrownianNoise(seed=-1), "seed", "-1")
    case(a, "BrownianNoise(seed='a')", lambda: S.BrownianNoise(seed="a"), "seed", "'a'")
    case(a, "BrownianNoise(seed=1.5)", lambda: S.BrownianNoise(seed=1.5), "seed", "1.5")
    case(a, "BrownianNoise(tol=0)", lambda: S.BrownianNoise(tol=0.0), "tol", "0")
    case(a, "BrownianNoise(levy_area=1)", lambda: S.BrownianNoise(levy_area=1), "levy_area")
    case(a, "BrownianNoise unbound", lambda: S.BrownianNoise(0)(1.0, 0.5, torch.zeros(2)),
         "bind")  # fmt: skip
    case(a, "per-sample seeds for another batch",
         lambda: run("euler_maruyama", noise=S.BrownianNoise(seed=[1, 2])), "2 seeds", "4")  # fmt: skip


def _net_returning(value):
    return net_denoiser(lambda x, t: value(x))


def denoiser_cases():
    a = "denoiser"
    outs = {
        "a tuple": lambda x: (x, x),
        "a dict": lambda x: {"sample": x},
        "None": lambda x: None,
        "the wrong shape": lambda x: x[:, :1],
        "an int tensor": lambda x: x.long(),
        "a list": lambda x: x.tolist(),
        "a 0-d tensor": lambda x: x.sum(),
        "a numpy array": lambda x: x.numpy(),
    }
    for what, fn in outs.items():
        case(a, f"net returns {what}", lambda fn=fn: run(den=_net_returning(fn)), "net")
    case(a, "net returns float64 for float32 (cast back)",
         lambda: run(den=_net_returning(lambda x: x.double())), fine=True,
         check=lambda r: r.x.dtype == torch.float32)  # fmt: skip
    case(a, "net returns NaN", lambda: run(den=_net_returning(lambda x: x * math.nan)), "t")
    case(a, "net NaN at the final denoise",
         lambda: run(den=S.Denoiser(lambda x, t: torch.where(t[:, None] < 0.01,
                     x * math.nan, x), VP, "x0"), denoise_final=True), "t")  # fmt: skip
    case(a, "Denoiser(net=5)", lambda: S.Denoiser(5, VP, "eps"), "net", "5")
    case(a, "Denoiser(sde=5)", lambda: S.Denoiser(lambda x, t: x, 5, "eps"), "sde", "5")
    case(a, "Denoiser(parameterization='noise_pred')",
         lambda: S.Denoiser(lambda x, t: x, VP, "noise_pred"), "parameterization",
         "'noise_pred'")  # fmt: skip
    case(a, "Denoiser(time_input='bogus')",
         lambda: S.Denoiser(lambda x, t: x, VP, "eps", time_input="bogus"), "time_input")  # fmt: skip
    case(a, "Denoiser(guidance=5)",
         lambda: S.Denoiser(lambda x, t: x, VP, "eps", guidance=5), "guidance", "5")  # fmt: skip
    case(a, "Denoiser(x0_correction=5)",
         lambda: S.Denoiser(lambda x, t: x, VP, "eps", x0_correction=5), "x0_correction")  # fmt: skip
    case(a, "TrainIndex on a continuous SDE",
         lambda: run(den=S.Denoiser(lambda x, t: x, VP, "x0", time_input=S.TrainIndex())),
         "TrainIndex")  # fmt: skip
    case(a, "ClassifierFreeGuidance(scale=nan)",
         lambda: S.ClassifierFreeGuidance(math.nan, cond={}, uncond={}), "scale", "nan")  # fmt: skip
    case(a, "ClipX0(-1)", lambda: S.ClipX0(-1.0), "range", "-1")
    case(a, "DynamicThreshold(ratio=2)", lambda: S.DynamicThreshold(ratio=2.0), "ratio", "2")
    case(a, "log_prob of NaN data", lambda: __import__("scoresde.likelihood").likelihood.log_prob(
         RING, torch.full((3, 2), math.nan)), "x")  # fmt: skip
    case(a, "log_prob divergence='bogus'", lambda: __import__("scoresde.likelihood").likelihood
         .log_prob(RING, torch.zeros(3, 2), divergence="bogus"), "divergence", "'bogus'")  # fmt: skip


def model_config_cases():
    from scoresde.adapters import from_diffusers, from_k_diffusion
    from scoresde.models import ScoreMLP, UNet

    a = "models"
    case(a, "UNet attention resolution 5 of 28", lambda: UNet(attention_resolutions=(5,)),
         "attention_resolutions", "5")  # fmt: skip
    case(a, "UNet(image_size=30, 3 levels)", lambda: UNet(image_size=30), "image_size", "30")
    case(a, "UNet(channels=0)", lambda: UNet(channels=0), "channels", "0")
    case(a, "UNet(channel_mults=())", lambda: UNet(channel_mults=()), "channel_mults")
    case(a, "UNet(heads=3)", lambda: UNet(heads=3), "heads", "3")
    case(a, "UNet(dropout=1.5)", lambda: UNet(dropout=1.5), "dropout", "1.5")
    case(a, "UNet(embedding='bogus')", lambda: UNet(embedding="bogus"), "embedding", "'bogus'")
    case(a, "ScoreMLP(dim=0)", lambda: ScoreMLP(0), "dim", "0")
    case(a, "ScoreMLP on 3-D data", lambda: ScoreMLP(2)(torch.zeros(4, 3), torch.zeros(4)),
         "dim")  # fmt: skip

    a = "configs"
    net = lambda x, t: x  # noqa: E731
    for cfg, word in [({"beta_schedule": "linear", "beta_start": "x"}, "beta_start"),
                      ({"beta_schedule": "linear", "num_train_timesteps": 0}, "num_train_timesteps"),
                      ({"beta_schedule": "sigmoid"}, "beta_schedule"),
                      ({"trained_betas": [[0.1]]}, "trained_betas"),
                      ({"beta_schedule": "linear", "prediction_type": "eps"}, "prediction_type"),
                      ({"beta_schedule": "linear", "clip_sample": "yes"}, "clip_sample"),
                      ({"beta_schedule": "linear", "beta_end": math.nan}, "beta_end"),
                      ({}, "beta_schedule")]:  # fmt: skip
        case(a, f"from_diffusers {cfg}", lambda cfg=cfg: from_diffusers(net, cfg), word)
    case(a, "from_diffusers(scheduler=42)", lambda: from_diffusers(net, 42), "scheduler_or_config")
    case(a, "from_k_diffusion sigmas with NaN",
         lambda: from_k_diffusion(net, sigmas=[80.0, math.nan, 0.1]), "sigmas", "nan")  # fmt: skip
    case(a, "from_k_diffusion sigmas all zero", lambda: from_k_diffusion(net, sigmas=[0.0, 0.0]),
         "sigmas")  # fmt: skip
    case(a, "from_k_diffusion sigma_min > sigma_max",
         lambda: from_k_diffusion(net, sigma_min=10.0, sigma_max=1.0), "sigma")  # fmt: skip
    case(a, "from_k_diffusion no range", lambda: from_k_diffusion(net), "sigma_min")
    case(a, "from_k_diffusion(denoiser=5)", lambda: from_k_diffusion(5, sigmas=[1.0, 2.0]),
         "denoiser")  # fmt: skip
    case(a, "from_k_diffusion sigmas='abc'", lambda: from_k_diffusion(net, sigmas="abc"),
         "sigmas")  # fmt: skip
    case(a, "get_sampler from a config without name",
         lambda: S.get_sampler({"options": {}}), "name")  # fmt: skip


def metric_cases():
    from scoresde.metrics.distances import mmd2, sliced_wasserstein
    from scoresde.metrics.fid import FeatureStats, frechet_distance, preprocess

    a = "metrics"
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    eye = np.eye(3)
    case(a, "FeatureStats.of(NaN features)",
         lambda: FeatureStats.of(torch.full((5, 3), math.nan)), "features")  # fmt: skip
    case(a, "FeatureStats.of(1 sample)", lambda: FeatureStats.of(torch.zeros(1, 3)), "features")
    case(a, "FeatureStats.of(1-D)", lambda: FeatureStats.of(torch.zeros(5)), "features")
    case(a, "frechet_distance shape mismatch",
         lambda: frechet_distance(np.zeros(3), eye, np.zeros(4), np.eye(4)), "shape")  # fmt: skip
    case(a, "frechet_distance NaN mean",
         lambda: frechet_distance(np.full(3, np.nan), eye, np.zeros(3), eye), "mu1")  # fmt: skip
    case(a, "frechet_distance non-PSD sigma",
         lambda: frechet_distance(np.zeros(3), -eye, np.zeros(3), eye), "sigma1")  # fmt: skip
    case(a, "frechet_distance non-square sigma",
         lambda: frechet_distance(np.zeros(3), np.ones((3, 2)), np.zeros(3), eye), "sigma1")  # fmt: skip
    case(a, "sliced_wasserstein dim mismatch", lambda: sliced_wasserstein(x, x[:, :2]), "x")
    case(a, "sliced_wasserstein NaN", lambda: sliced_wasserstein(x * math.nan, x), "x")
    case(a, "sliced_wasserstein n_projections=0",
         lambda: sliced_wasserstein(x, x, n_projections=0), "n_projections", "0")  # fmt: skip
    case(a, "mmd2 of one sample", lambda: mmd2(x[:1], x), "x")
    case(a, "mmd2 bandwidth=-1", lambda: mmd2(x, x, bandwidth=-1.0), "bandwidth", "-1")
    images = torch.rand(2, 1, 28, 28)
    case(a, "FID images with NaN", lambda: preprocess(images * math.nan), "images", "NaN")
    case(a, "FID images of shape (2, 28, 28)", lambda: preprocess(images[:, 0]), "images",
         "(2, 28, 28)")  # fmt: skip
    case(a, "FID images with 2 channels", lambda: preprocess(images.expand(-1, 2, -1, -1)),
         "images", "(2, 2, 28, 28)")  # fmt: skip
    case(a, "FID images in [0, 255] floats", lambda: preprocess(images * 255), "images", "[0, 1]")
    case(a, "FID images int64", lambda: preprocess(images.long()), "images", "int64")

    from scoresde.losses import dsm_loss

    a = "losses"
    den = S.Denoiser(lambda x, t: x, VP, "eps")
    x0 = torch.zeros(4, 2)
    # NaN data give a NaN loss (visible, not a wrong finite number): counted as correct
    case(a, "dsm_loss of NaN data", lambda: dsm_loss(den, x0 * math.nan), fine=True,
         check=lambda v: bool(torch.isnan(v)))  # fmt: skip
    case(a, "dsm_loss weighting='bogus'", lambda: dsm_loss(den, x0, weighting="bogus"),
         "weighting", "'bogus'")  # fmt: skip
    case(a, "dsm_loss x0 a list", lambda: dsm_loss(den, [[0.0, 0.0]]), "x0")
    case(a, "dsm_loss x0 int64", lambda: dsm_loss(den, x0.long()), "x0")
    case(a, "dsm_loss t_sampler='bogus'", lambda: dsm_loss(den, x0, t_sampler="bogus"),
         "t_sampler", "'bogus'")  # fmt: skip
    case(a, "dsm_loss reduce='max'", lambda: dsm_loss(den, x0, reduce="max"), "reduce", "'max'")
    case(a, "dsm_loss t of the wrong length", lambda: dsm_loss(den, x0, t=torch.full((3,), 0.5)),
         "t")  # fmt: skip


def file_cases(tmp: Path):
    from scoresde import checkpoint as ck
    from scoresde.data import load_images, read_idx
    from scoresde.metrics.fid import FeatureStats, InceptionFeatures

    a = "files"
    rng = np.random.default_rng(0)
    good = tmp / "ring" / "ema.pt"
    raw = good.read_bytes()
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "half.pt").write_bytes(raw[: len(raw) // 2])
    (tmp / "random.pt").write_bytes(rng.bytes(4096))
    torch.save([1, 2, 3], tmp / "list.pt")
    state = ck.load(good)
    torch.save({k: v for k, v in state.items() if k != "sde"}, tmp / "nosde.pt")
    torch.save({**state, "ema": {}}, tmp / "noweights.pt")
    for name in ("empty", "half", "random", "list", "nosde"):
        case(a, f"checkpoint {name}.pt", lambda n=name: ck.load(tmp / f"{n}.pt"), f"{name}.pt")
    case(a, "checkpoint with empty weights", lambda: ck.load_denoiser(tmp / "noweights.pt"),
         "noweights.pt")  # fmt: skip
    case(a, "checkpoint missing", lambda: ck.load(tmp / "nope.pt"), "nope.pt")
    case(a, "checkpoint is a folder", lambda: ck.load(tmp), str(tmp))
    case(a, "checkpoint map_location='tpu'", lambda: ck.load(good, map_location="tpu"), "tpu")

    header = bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in (4, 28, 28))
    body = rng.integers(0, 256, 4 * 28 * 28, dtype=np.uint8).tobytes()
    files = {
        "truncated.idx": header + body[:100],
        "badmagic.idx": b"\x01\x02\x03\x04" + body,
        "empty.idx": b"",
        "truncated.idx.gz": gzip.compress(header + body)[:200],
        "corrupt.idx.gz": b"\x1f\x8b" + rng.bytes(300),
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
        case(a, f"idx {name}", lambda n=name: read_idx(tmp / n), name)
    case(a, "idx missing", lambda: read_idx(tmp / "none.idx"), "none.idx")
    d = tmp / "mnist-broken"
    d.mkdir()
    (d / "train-images-idx3-ubyte").write_bytes(header + body)
    label_head = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big")
    (d / "train-labels-idx1-ubyte").write_bytes(label_head + bytes(3))
    case(a, "idx images and labels disagree", lambda: load_images(d), "mnist-broken")
    case(a, "data dir missing labels", lambda: load_images(d, "test"), "t10k")
    case(a, "data split='val'", lambda: load_images(d, "val"), "split", "'val'")
    case(a, "data dir missing", lambda: load_images(tmp / "nodir"), "nodir")

    (tmp / "bad.npz").write_bytes(rng.bytes(500))
    np.savez(tmp / "partial.npz", mu=np.zeros(3))
    case(a, "stats corrupt .npz", lambda: FeatureStats.load(tmp / "bad.npz"), "bad.npz")
    case(a, "stats .npz missing keys", lambda: FeatureStats.load(tmp / "partial.npz"),
         "partial.npz")  # fmt: skip
    case(a, "stats .npz missing", lambda: FeatureStats.load(tmp / "none.npz"), "none.npz")
    case(a, "Inception file not TorchScript", lambda: InceptionFeatures(tmp / "random.pt"),
         "random.pt")  # fmt: skip
    case(a, "Inception file missing", lambda: InceptionFeatures(tmp / "none.pt"), "none.pt")


def cli_cases(tmp: Path):
    ring = tmp / "ring" / "ema.pt"
    cli_case("no verb", [], "command")
    cli_case("unknown verb", ["fly"], "fly")
    cli_case("train --steps 0", ["train", "--data", "ring", "--out", str(tmp / "t0"), "--steps",
             "0"], "steps")  # fmt: skip
    cli_case("train --batch-size x", ["train", "--data", "ring", "--batch-size", "x"],
             "--batch-size", "'x'")  # fmt: skip
    cli_case("train --lr -1", ["train", "--data", "ring", "--out", str(tmp / "t1"), "--lr", "-1"],
             "lr", "-1")  # fmt: skip
    cli_case("train --lr nan", ["train", "--data", "ring", "--out", str(tmp / "t2"), "--lr",
             "nan"], "lr", "nan")  # fmt: skip
    cli_case("train --data bogus", ["train", "--data", "bogus", "--out", str(tmp / "t3")],
             "--data", "bogus")  # fmt: skip
    cli_case("train --out under a file", ["train", "--data", "ring", "--out",
             str(tmp / "afile" / "run")], "afile")  # fmt: skip
    cli_case("train --device tpu", ["train", "--data", "ring", "--out", str(tmp / "t4"),
             "--device", "tpu"], "tpu")  # fmt: skip
    cli_case("train --resume without checkpoint", ["train", "--data", "ring", "--out",
             str(tmp / "t5"), "--resume"], "checkpoint")  # fmt: skip
    cli_case("train --ema-decay 2", ["train", "--data", "ring", "--out", str(tmp / "t6"),
             "--ema-decay", "2"], "ema_decay", "2")  # fmt: skip
    cli_case("train --channel-mults 1,x", ["train", "--data", "ring", "--out", str(tmp / "t7"),
             "--channel-mults", "1,x"], "channel")  # fmt: skip
    cli_case("sample missing ckpt", ["sample", "--ckpt", str(tmp / "no.pt"), "--nfe", "4",
             "--out", str(tmp / "s.pt")], "no.pt")  # fmt: skip
    cli_case("sample random-bytes ckpt", ["sample", "--ckpt", str(tmp / "random.pt"), "--nfe",
             "4", "--out", str(tmp / "s.pt")], "random.pt")  # fmt: skip
    cli_case("sample --nfe 0", ["sample", "--ckpt", str(ring), "--nfe", "0", "--out",
             str(tmp / "s.pt")], "nfe", "0")  # fmt: skip
    cli_case("sample --nfe x", ["sample", "--ckpt", str(ring), "--nfe", "x"], "--nfe", "'x'")
    cli_case("sample --n 0", ["sample", "--ckpt", str(ring), "--nfe", "4", "--n", "0", "--out",
             str(tmp / "s.pt")], "--n", "0")  # fmt: skip
    cli_case("sample --out folder", ["sample", "--ckpt", str(ring), "--nfe", "4", "--out",
             str(tmp)], "--out")  # fmt: skip
    cli_case("sample --out .jpg", ["sample", "--ckpt", str(ring), "--nfe", "4", "--out",
             str(tmp / "x.jpg")], "--out", ".jpg")  # fmt: skip
    cli_case("sample --sampler nope", ["sample", "--ckpt", str(ring), "--nfe", "4", "--sampler",
             "nope", "--out", str(tmp / "s.pt")], "nope")  # fmt: skip
    cli_case("sample --grid bogus", ["sample", "--ckpt", str(ring), "--nfe", "4", "--grid",
             "bogus", "--out", str(tmp / "s.pt")], "--grid", "bogus")  # fmt: skip
    cli_case("sample --sampler bad JSON", ["sample", "--ckpt", str(ring), "--nfe", "4",
             "--sampler", "{bad", "--out", str(tmp / "s.pt")], "--sampler")  # fmt: skip
    cli_case("sample --class-label on unconditional", ["sample", "--ckpt", str(ring), "--nfe",
             "4", "--class-label", "3", "--out", str(tmp / "s.pt")], "--class-label")  # fmt: skip
    cli_case("sample --threads 0", ["sample", "--ckpt", str(ring), "--nfe", "4", "--threads",
             "0", "--out", str(tmp / "s.pt")], "--threads", "0")  # fmt: skip
    cli_case("nll toy checkpoint", ["nll", "--ckpt", str(ring)], "image checkpoints")
    cli_case("nll --json folder", ["nll", "--ckpt", str(ring), "--json", str(tmp)], "--json")
    cli_case("nll --json under a file", ["nll", "--ckpt", str(ring), "--json",
             str(tmp / "afile" / "x.json")], "--json")  # fmt: skip
    cli_case("nll --method bogus", ["nll", "--ckpt", str(ring), "--method", "bogus"], "--method")
    cli_case("demo --n 1", ["demo", "--n", "1", "--out", str(tmp / "d.png")], "n_samples", "1")
    cli_case("demo --out .txt", ["demo", "--out", str(tmp / "d.txt")], "out", ".txt")
    cli_case("demo --steps 0", ["demo", "--steps", "0", "--out", str(tmp / "d.png")], "0")
    cli_case("demo --device tpu", ["demo", "--device", "tpu", "--out", str(tmp / "d.png")], "tpu")
    cli_case("recommend --nfe 0", ["recommend", "--nfe", "0"], "nfe", "0")
    cli_case("recommend --nfe x", ["recommend", "--nfe", "x"], "--nfe", "'x'")
    cli_case("recommend --table missing", ["recommend", "--nfe", "10", "--table",
             str(tmp / "none.tsv")], "none.tsv")  # fmt: skip
    cli_case("recommend --top 0", ["recommend", "--nfe", "10", "--top", "0"], "top", "0")


def build_cases(tmp: Path) -> None:
    from scoresde.cli import main

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["train", "--data", "ring", "--toy-size", "64", "--batch-size", "8", "--steps",
                   "1", "--out", str(tmp / "ring"), "--no-progress"])  # fmt: skip
    assert rc == 0, "could not train the toy checkpoint the file and CLI cases read"
    (tmp / "afile").touch()
    sample_cases()
    sampler_cases()
    sde_grid_noise_cases()
    denoiser_cases()
    model_config_cases()
    metric_cases()
    file_cases(tmp)
    cli_cases(tmp)


COLUMNS = ["area", "case", "kind", "detail"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--label", default="", help="suffix of the output files (e.g. _before)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sha, start = git_revision(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        build_cases(Path(tmp))
        for c in CASES:
            classify(c)
    counts = {k: sum(c.kind == k for c in CASES) for k in ("clear", "correct", "other")}
    total = len(CASES)
    print(f"{total} bad inputs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    others = [c for c in CASES if c.kind == "other"]
    for c in others:
        print(f"  other [{c.area}] {c.what}: {c.detail}")
    folder = result_dir("cpu", out=args.out)
    rows = [{"area": c.area, "case": c.what, "kind": c.kind, "detail": c.detail} for c in CASES]
    write_tsv(folder / f"bad_inputs{args.label}.tsv", rows, COLUMNS)
    areas = sorted({c.area for c in CASES})
    lines = [
        "# Bad-input sweep",
        "",
        f"{total} inputs; clear error {counts['clear']}, correct result {counts['correct']}, "
        f"other {counts['other']} ({100 * counts['other'] / total:.1f} %).",
        "",
        "| area | tried | clear | correct | other |",
        "| --- | --- | --- | --- | --- |",
    ]
    for area in areas:
        mine = [c for c in CASES if c.area == area]
        n = {k: sum(c.kind == k for c in mine) for k in counts}
        lines.append(f"| {area} | {len(mine)} | {n['clear']} | {n['correct']} | {n['other']} |")
    lines += ["", "## Cases classified other", ""]
    lines += [f"- [{c.area}] `{c.what}`: {c.detail}" for c in others] or ["(none)"]
    lines += [
        "",
        "## All cases",
        "",
        "| area | case | kind | detail |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c.area} | `{c.what}` | {c.kind} | {c.detail.replace('|', '/')[:160]} |" for c in CASES
    ]
    (folder / f"bad_inputs{args.label}.md").write_text("\n".join(lines) + "\n")
    write_env(folder, device="cpu", seeds={"seed": 0}, git_sha=sha,
              name=f"env_bad_inputs{args.label}.txt",
              extra={"wall_s": f"{time.perf_counter() - start:.0f}"})  # fmt: skip
    print(f"wrote {folder} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
