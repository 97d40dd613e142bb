"""The ``train``, ``sample`` and ``nll`` subcommands of ``python -m scoresde``.

:func:`add_train_parsers` registers them on an ``argparse`` sub-parser collection; each sets
``func`` to its handler, which takes the parsed namespace and returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from .utils import check_device

__all__ = ["add_train_parsers", "SDE_CHOICES", "make_sde"]

SDE_CHOICES = ("vp", "subvp", "ve", "ddpm")


def make_sde(name: str):
    """The SDE a CLI name stands for, with its paper defaults."""
    from . import VESDE, VPSDE, DiscreteVPSDE, SubVPSDE

    makers = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "ddpm": DiscreteVPSDE.linear}
    if name not in makers:
        raise ValueError(f"--sde must be one of {list(makers)}; got {name!r}")
    return makers[name]()


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints like 1,2,2; got {text!r}"
        ) from None


def add_train_parsers(subparsers) -> None:
    """Register ``train``, ``sample`` and ``nll`` on ``subparsers`` (from ``add_subparsers``)."""
    from .data import IMAGE_DATASETS, TOY_DATASETS
    from .losses import WEIGHTINGS

    p = subparsers.add_parser(
        "train",
        help="train a score network (DSM) and write checkpoints",
        description="Train a score network by denoising score matching. Writes OUT/checkpoint.pt "
        "(full state, for --resume), OUT/ema.pt (EMA weights, for sample/nll) and OUT/log.jsonl. "
        "Launch with torchrun for multi-process (DDP) training.",
    )
    p.add_argument("--data", required=True, choices=IMAGE_DATASETS + TOY_DATASETS)
    p.add_argument("--data-dir", help="directory of the idx files (image data sets)")
    p.add_argument("--toy-size", type=int, default=50_000, help="points in a toy 2-D training set")
    p.add_argument("--sde", default="vp", choices=SDE_CHOICES)
    # v: an eps network's errors at high noise are amplified by the reverse drift (see
    # benchmarks/checkpoints/README.md); a v network predicts the data there
    p.add_argument("--parameterization", default="v", choices=("eps", "x0", "v", "score"))
    p.add_argument(
        "--time-input", default="log_sigma", choices=("t", "index", "sigma", "log_sigma")
    )
    p.add_argument(
        "--model", choices=("unet", "mlp"), help="default: unet for images, mlp for toy data"
    )
    p.add_argument("--channels", type=int, default=32, help="UNet base width")
    p.add_argument("--channel-mults", type=_int_tuple, default=(1, 2, 2))
    p.add_argument("--num-res-blocks", type=int, default=1)
    p.add_argument("--attention-resolutions", type=_int_tuple, default=(7,))
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--class-conditional", action="store_true", help="condition the UNet on labels")
    p.add_argument(
        "--label-dropout",
        type=float,
        default=0.0,
        help="with --class-conditional: fraction of examples trained as unconditional, for "
        "classifier-free guidance (0.1 in Ho & Salimans 2022)",
    )
    p.add_argument("--width", type=int, default=128, help="MLP width")
    p.add_argument("--depth", type=int, default=3, help="MLP residual blocks")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: off)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument(
        "--loss",
        default="dsm",
        choices=("dsm", "ssm"),
        help="denoising or sliced score matching (ssm: unconditional, sigma^2 weighting)",
    )
    p.add_argument("--weighting", default="none", choices=WEIGHTINGS)
    p.add_argument("--t-sampler", default="uniform", choices=("uniform", "lambda"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--allow-recipe-change",
        action="store_true",
        help="resume although the data, batch size, learning rate, seed, ... differ "
        "(the checkpoint records every recipe)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("sample", help="draw samples from a checkpoint into a PNG grid")
    p.add_argument("--ckpt", required=True, help="checkpoint.pt or ema.pt written by train")
    p.add_argument(
        "--sampler",
        default="pf_euler",
        help="registry key (see scoresde.SAMPLERS), or a sampler config as JSON, inline or a "
        ".json file (what Sampler.to_config() gives)",
    )
    p.add_argument(
        "--nfe",
        type=int,
        help="network evaluations; must be a count the sampler can spend exactly (required "
        "unless --grid is a saved grid file, whose step count fixes it, or the sampler is "
        "adaptive, e.g. adaptive_sde, which picks its own steps: leave it out then)",
    )
    p.add_argument(
        "--grid",
        default=None,
        help=f"one of {list(GRID_NAMES)}, a grid file saved by Explicit.save (e.g. a fitted "
        "Optimized grid), or a grid config as JSON, inline or a .json file (TimeGrid.to_config()); "
        "default: the sampler's own default grid. 'optimized' fits a grid for this checkpoint and "
        "sampler first (a few minutes on a CPU for a small UNet)",
    )
    p.add_argument("--save-grid", help="also save the grid that was used (.pt, Explicit.save)")
    p.add_argument(
        "--denoise-final",
        action="store_true",
        help="replace the last state by the model's x0 prediction (one of the --nfe calls)",
    )
    p.add_argument("--n", type=int, default=64, help="number of samples")
    p.add_argument(
        "--class-label",
        default=None,
        help="class-conditional checkpoints: the label of every sample, or a comma-separated "
        "list that the samples cycle through (e.g. 0,1,2,...,9)",
    )
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=1.0,
        help="with --class-label: classifier-free guidance scale w (1 = the conditional model, "
        "one network call per NFE; otherwise conditional and unconditional in one doubled batch)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", required=True, help="PNG file (image grid of image data) or .pt file (any data)"
    )
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_sample)

    p = subparsers.add_parser(
        "nll",
        help="test-set negative log-likelihood in bits/dim: the PF-ODE's exact NLL or the "
        "variational bound",
    )
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data-dir", help="directory of the idx files (default: the checkpoint's)")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--n", type=int, default=None, help="first N images (default: all)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument(
        "--method",
        default="ode",
        choices=("ode", "vlb"),
        help="ode: PF-ODE likelihood (dequantised); vlb: the DDPM variational bound",
    )
    p.add_argument("--ode-method", default="dopri5", help="torchdiffeq solver (--method ode)")
    p.add_argument(
        "--vlb-steps", type=int, default=None, help="grid times of the bound (default: all / 1000)"
    )
    p.add_argument("--variance", default="beta", choices=("beta", "posterior"), help="(vlb)")
    p.add_argument("--seed", type=int, default=0, help="dequantisation and Hutchinson noise")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.set_defaults(func=run_nll)


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _setup_threads(args) -> None:
    """``--threads`` and ``--device``, checked before any work (every verb calls this first)."""
    check_device("--device", args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)


def _resolve_data_dir(name: str, data_dir: str | None) -> Path:
    from .data import default_data_dir

    if data_dir is not None:
        return Path(data_dir)
    found = default_data_dir(name)
    if found is None:
        raise ValueError(f"--data-dir is required for --data {name} (or set SCORESDE_DATA)")
    return found


# -------------------------------------------------------------------------------------------


def run_train(args) -> int:
    from . import Denoiser
    from .data import IMAGE_DATASETS, load_images, toy_2d
    from .models import ScoreMLP, UNet
    from .train import TrainConfig, train

    try:
        _setup_threads(args)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            import torch.distributed as dist

            dist.init_process_group("gloo" if args.device == "cpu" else "nccl")
        labels = None
        if args.data in IMAGE_DATASETS:
            data_dir = _resolve_data_dir(args.data, args.data_dir)
            images = load_images(data_dir, "train")
            data, info = images.images, {"name": args.data, "dir": str(data_dir), "split": "train"}
            labels = images.labels if args.class_conditional else None
        else:
            data = toy_2d(args.data, args.toy_size, seed=args.seed)
            info = {"name": args.data, "n": args.toy_size, "seed": args.seed}
        model_kind = args.model or ("unet" if args.data in IMAGE_DATASETS else "mlp")
        torch.manual_seed(args.seed)  # the initial weights
        if model_kind == "unet":
            if data.ndim != 4:
                raise ValueError(
                    f"--model unet needs image data; --data {args.data} is {tuple(data.shape[1:])}"
                )
            net = UNet(
                in_channels=data.shape[1],
                image_size=data.shape[-1],
                channels=args.channels,
                channel_mults=args.channel_mults,
                num_res_blocks=args.num_res_blocks,
                attention_resolutions=args.attention_resolutions,
                dropout=args.dropout,
                num_classes=10 if args.class_conditional else None,
            )
        else:
            net = ScoreMLP(math.prod(data.shape[1:]), width=args.width, depth=args.depth)
        net = net.to(args.device)
        denoiser = Denoiser(
            net, make_sde(args.sde), args.parameterization, time_input=args.time_input
        )
        config = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup=args.warmup,
            grad_clip=args.grad_clip or None,
            ema_decay=args.ema_decay,
            weighting=args.weighting,
            t_sampler=args.t_sampler,
            label_dropout=args.label_dropout,
            loss=args.loss,
            seed=args.seed,
            ckpt_every=args.ckpt_every,
            log_every=args.log_every,
        )
        n_params = sum(p.numel() for p in net.parameters())
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{denoiser!r}\nparameters: {n_params:,}\n{config}", flush=True)
        result = train(
            denoiser,
            data,
            config,
            out_dir=args.out,
            resume=args.resume,
            allow_recipe_change=args.allow_recipe_change,
            labels=labels,
            data_info=info,
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as err:
        return _error(str(err))
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        t = result.timing
        total = sum(t.values())
        parts = (
            ", ".join(f"{k} {v:.1f}s ({100 * v / total:.0f}%)" for k, v in t.items())
            if total
            else ""
        )
        print(
            f"step {result.step}: loss {result.losses[-1]:.4f}; "
            f"{result.images_per_s:.1f} images/s; {parts}"
        )
        print(f"checkpoint: {result.checkpoint}")
    return 0


def _config_arg(flag: str, value: str):
    """A name, or a JSON config given inline or as a ``.json`` file."""
    if value.endswith(".json"):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{flag} config file not found: {value!r}")
        value = path.read_text()
    if value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{flag} is not valid JSON ({err}); got {value!r}") from None
    return value


# the grids ``sample --grid`` builds by name (a path to a saved grid file is also accepted)
GRID_NAMES = (
    "uniform_time",
    "uniform_lambda",
    "karras",
    "quadratic",
    "linspace",
    "leading",
    "trailing",
    "optimized",
)
SAMPLE_SUFFIXES = (".png", ".pt")


def make_grid(name: str | None, *, sampler=None, denoiser=None, shape=None):
    """The grid ``sample --grid NAME`` stands for: ``None`` (the sampler's default), a named
    grid, or an :class:`Explicit` grid loaded from a ``.pt`` file written by ``Explicit.save``.
    ``"optimized"`` needs the sampler, the denoiser and the sample shape it is fitted for."""
    from .grids import DiscreteSpacing, Explicit, Karras, Quadratic, UniformLambda, UniformTime

    if name is None:
        return None
    if name.endswith(".json") or name.lstrip().startswith("{"):
        from .grids import grid_from_config

        return grid_from_config(_config_arg("--grid", name))
    named = {"uniform_time": UniformTime, "uniform_lambda": UniformLambda,
             "karras": lambda: Karras(7.0), "quadratic": Quadratic}  # fmt: skip
    if name in named:
        return named[name]()
    if name in DiscreteSpacing.KINDS:
        return DiscreteSpacing(name)
    if name == "optimized":
        from .tuning import Optimized

        # the settings measured on the MNIST checkpoint (docs/benchmarks.md): minutes on a CPU
        return Optimized(sampler, denoiser, shape=(8, *shape[1:]), reference_steps=50,
                         max_evals=200, patience=40, progress=True)  # fmt: skip
    path = Path(name)
    if path.suffix != ".pt" or not path.is_file():
        raise ValueError(
            f"--grid must be one of {list(GRID_NAMES)} or an existing .pt grid file saved by "
            f"Explicit.save; got {name!r}"
        )
    try:
        return Explicit.load(path)
    except (KeyError, RuntimeError, TypeError, ValueError, EOFError, OSError) as err:
        raise ValueError(
            f"--grid {name!r} is not a grid file saved by Explicit.save ({err})"
        ) from None


def nfe_to_steps(sampler, nfe: int, *, extra: int = 0) -> int:
    """The ``n_steps`` at which ``sampler.nfe(n_steps) + extra == nfe`` (``extra``: the final
    x0 call of ``--denoise-final``, paid from the same budget), or ``ValueError`` naming the
    nearest budgets it can spend exactly, in the same terms as ``--nfe``."""
    if not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"--nfe must be an int >= 1; got {nfe!r}")
    if sampler.nfe(1) is None:
        raise ValueError(
            f"sampler {sampler.name!r} is adaptive: its NFE is not fixed in advance; leave --nfe "
            "out (its tolerances go in a --sampler config)"
        )
    n, possible = 1, []
    while (cost := sampler.nfe(n) + extra) <= nfe:
        if cost == nfe:
            return n
        possible.append(cost)
        n += 1
    above = sampler.nfe(n) + extra
    final = f" (with --denoise-final, which spends {extra} NFE on the final x0)" if extra else ""
    if possible:
        spends = (f"{possible[-1]} or {above} network calls at n_steps = {n - 1} or {n}; valid "
                  f"values are {possible[-1]} or {above}")  # fmt: skip
    else:
        spends = f"{above} network calls at n_steps = 1; the smallest valid value is {above}"
    raise ValueError(
        f"sampler {sampler.name!r} cannot spend exactly --nfe {nfe}{final}: it spends {spends}"
    )


def run_sample(args) -> int:
    from . import get_sampler, sample
    from .checkpoint import load, load_denoiser
    from .data import float_to_images
    from .grids import Explicit
    from .utils import check_device, check_writable

    try:
        _setup_threads(args)
        if args.n < 1:
            raise ValueError(f"--n must be >= 1; got {args.n}")
        # every check that can fail runs before any network call is spent
        out = check_writable("--out", args.out, SAMPLE_SUFFIXES)
        save_to = (
            None
            if args.save_grid is None
            else check_writable("--save-grid", args.save_grid, (".pt",))
        )
        check_device("--device", args.device)
        ckpt = load(args.ckpt, map_location=args.device)
        cfg = ckpt["model_config"]
        shape = (
            (args.n, cfg["in_channels"], cfg["image_size"], cfg["image_size"])
            if cfg["name"] == "unet"
            else (args.n, cfg["dim"])
        )
        if out.suffix.lower() == ".png" and len(shape) != 4:
            raise ValueError(
                f"--out {out} is a PNG but the checkpoint's data are not images (shape {shape}); "
                "use a .pt file"
            )
        denoiser = load_denoiser(ckpt, ema=not args.no_ema)
        denoiser.net.to(args.device)
        denoiser = _conditioned(denoiser, ckpt, args)
        sampler = get_sampler(_config_arg("--sampler", args.sampler))
        grid = make_grid(args.grid, sampler=sampler, denoiser=denoiser, shape=shape)
        extra = int(args.denoise_final)  # the final x0 prediction is paid from the same budget
        if isinstance(grid, Explicit):
            n_steps = grid.ts.numel() - 1
            spent = sampler.nfe(n_steps)
            if args.nfe is not None and spent is not None and args.nfe != spent + extra:
                raise ValueError(
                    f"--nfe {args.nfe} does not match the grid file's {n_steps} steps "
                    f"({spent + extra} NFE with {args.sampler!r}); leave --nfe out"
                )
        elif args.nfe is None and sampler.nfe(1) is None:
            n_steps = None  # adaptive: one output interval, its own steps
        elif args.nfe is None:
            raise ValueError(
                "--nfe is required unless --grid is a saved grid file or the sampler is adaptive"
            )
        else:
            n_steps = nfe_to_steps(sampler, args.nfe, extra=extra)
        gen = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        res = sample(
            sampler,
            denoiser,
            shape=shape,
            n_steps=n_steps,
            grid=grid,
            generator=gen,
            denoise_final=args.denoise_final,
            progress=False,
            device=args.device,
        )
        seconds = time.perf_counter() - start
    except (ValueError, TypeError, FileNotFoundError) as err:
        return _error(str(err))
    grid_name = args.grid or "the sampler's default"
    if out.suffix.lower() == ".png":
        caption = f"{args.sampler}, grid {grid_name}, {res.nfe} NFE, {args.n} samples"
        save_grid(float_to_images(res.x.cpu()), out, caption=caption)
    else:
        torch.save(res.x.cpu(), out)
    if save_to is not None:
        Explicit(res.ts).save(save_to)
    cond = ""
    if args.class_label is not None:
        cond = f", class {args.class_label}, guidance scale {args.guidance_scale:g}"
    print(
        f"{args.n} samples with {sampler!r} ({n_steps or 'adaptive'} steps, {res.nfe} NFE "
        "measured, "
        f"grid {grid if grid is not None else sampler.default_grid!r}"
        f"{', denoised final step' if args.denoise_final else ''}{cond}) "
        f"in {seconds:.1f}s -> {out}"
    )
    return 0


def _conditioned(denoiser, ckpt: dict, args):
    """The checkpoint's denoiser conditioned on ``--class-label`` (with classifier-free guidance
    at ``--guidance-scale``), or unconditional, with a warning for a class-conditional model."""
    import warnings

    from .denoiser import ClassifierFreeGuidance, Denoiser

    if not math.isfinite(args.guidance_scale):
        raise ValueError(f"--guidance-scale must be a finite number; got {args.guidance_scale}")
    num_classes = ckpt["model_config"].get("num_classes")
    dropout = ckpt.get("train_config", {}).get("label_dropout")
    if args.class_label is None:
        if args.guidance_scale != 1.0:
            raise ValueError(
                f"--guidance-scale {args.guidance_scale} needs --class-label (the class to guide "
                "towards); got no label"
            )
        if num_classes is not None:
            trained = "" if dropout is None else f" (trained with label dropout {dropout})"
            warnings.warn(
                f"{args.ckpt} is class-conditional ({num_classes} classes) and no --class-label "
                f"was given: this samples the unconditional model{trained}; pass --class-label "
                f"K with K in [0, {num_classes - 1}] for class K",
                UserWarning,
                stacklevel=2,
            )
        return denoiser
    if num_classes is None:
        raise ValueError(
            f"--class-label needs a class-conditional checkpoint; {args.ckpt} was trained "
            "without labels (its model config has num_classes=None)"
        )
    try:
        labels = [int(v) for v in str(args.class_label).split(",")]
    except ValueError:
        raise ValueError(
            f"--class-label must be an int or a comma-separated list of ints; "
            f"got {args.class_label!r}"
        ) from None
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise ValueError(
            f"--class-label must be in [0, {num_classes - 1}] for this checkpoint "
            f"({num_classes} classes); got {bad[0]}"
        )
    y = torch.tensor([labels[i % len(labels)] for i in range(args.n)], device=args.device)
    kwargs = {"time_input": denoiser.time_input}
    if args.guidance_scale == 1.0:
        kwargs["model_kwargs"] = {"class_labels": y}
    else:
        if dropout == 0.0:
            warnings.warn(
                f"{args.ckpt} was trained without label dropout, so its unconditional model is "
                "untrained and guidance mixes in an arbitrary output",
                UserWarning,
                stacklevel=2,
            )
        null = torch.full_like(y, num_classes)  # the UNet's "no class" row
        kwargs["guidance"] = ClassifierFreeGuidance(
            args.guidance_scale, cond={"class_labels": y}, uncond={"class_labels": null}
        )
    return Denoiser(denoiser.net, denoiser.sde, denoiser.parameterization, **kwargs)


def save_grid(
    images, path: Path, *, nrow: int | None = None, scale: int = 3, caption: str | None = None
) -> None:
    """Tile ``uint8`` images ``(N, C, H, W)`` into a PNG: greyscale for one channel, RGB for
    three; tiles ``scale`` times upscaled (nearest neighbour) and separated by mid-grey lines,
    which stay visible on black or white backgrounds; ``caption`` written on a strip above."""
    from PIL import Image, ImageDraw

    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    pad = 2
    canvas = torch.full((c, ncol * (h + pad) + pad, nrow * (w + pad) + pad), 128, dtype=torch.uint8)
    for k in range(n):
        r, q = divmod(k, nrow)
        canvas[
            :,
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + q * (w + pad) : pad + q * (w + pad) + w,
        ] = images[k]
    canvas = canvas.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    arr = canvas[0].numpy() if c == 1 else canvas.permute(1, 2, 0).numpy()
    image = Image.fromarray(arr)  # uint8 (H, W) is greyscale "L", (H, W, 3) is "RGB"
    if caption:
        strip = 18
        framed = Image.new(
            image.mode,
            (image.width, image.height + strip),
            color=255 if c == 1 else (255, 255, 255),
        )
        framed.paste(image, (0, strip))
        ImageDraw.Draw(framed).text((4, 3), caption, fill=0 if c == 1 else (0, 0, 0))
        image = framed
    image.save(path)


def run_nll(args) -> int:
    from .checkpoint import load, load_denoiser
    from .data import images_to_float, load_images
    from .likelihood import image_nll_bpd, vlb
    from .utils import check_writable

    try:
        _setup_threads(args)
        # refused before the (long) computation, as sample's --out
        json_out = None if args.json is None else check_writable("--json", args.json, (".json",))
        ckpt = load(args.ckpt, map_location=args.device)
        if ckpt["model_config"].get("name") != "unet":
            raise ValueError(
                f"nll scores image checkpoints (bits/dim of 8-bit images); {args.ckpt!r} holds a "
                f"{ckpt['model_config'].get('name')!r} model trained on "
                f"{ckpt.get('data', {}).get('name', 'non-image data')!r}"
            )
        denoiser = load_denoiser(ckpt, ema=not args.no_ema)
        denoiser.net.to(args.device)
        info = ckpt.get("data", {})
        data_dir = args.data_dir or info.get("dir")
        if data_dir is None:
            raise ValueError("--data-dir is required (the checkpoint records no data directory)")
        images = load_images(data_dir, args.split).images
        if args.n is not None:
            if args.n < 1:
                raise ValueError(f"--n must be >= 1; got {args.n}")
            images = images[: args.n]
        gen = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        if args.method == "ode":
            res = image_nll_bpd(
                denoiser,
                images,
                batch_size=args.batch_size,
                rtol=args.rtol,
                atol=args.atol,
                method=args.ode_method,
                generator=gen,
                device=args.device,
            )
            extra = {"nfe_mean": res.nfe_mean, "rtol": args.rtol, "atol": args.atol,
                     "ode_method": args.ode_method}  # fmt: skip
            what = f"mean {res.nfe_mean:.0f} NFE/batch"
        else:
            res = vlb(
                denoiser,
                images_to_float(images).to(args.device),
                n_steps=args.vlb_steps,
                variance=args.variance,
                batch_size=args.batch_size,
                generator=gen,
            )
            extra = {"K": res.ts.numel(), "variance": args.variance, "prior": res.prior,
                     "decoder": res.decoder, "nfe": res.nfe}  # fmt: skip
            what = f"variational bound, K={res.ts.numel()}, variance {args.variance}"
        seconds = time.perf_counter() - start
    except (ValueError, FileNotFoundError) as err:
        return _error(str(err))
    summary = {
        "method": args.method,
        "bpd": res.bpd,
        "stderr": res.stderr,
        "n": res.n,
        "split": args.split,
        **extra,
        "seconds": round(seconds, 1),
        "ckpt": str(args.ckpt),
    }
    print(
        f"NLL {res.bpd:.4f} ± {res.stderr:.4f} bits/dim on {res.n} {args.split} images "
        f"({what}, {seconds:.0f}s)"
    )
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as err:
            return _error(f"--json: cannot write {str(json_out)!r} ({err.strerror})")
    return 0
