"""Command line: ``python -m scoresde {demo, train, sample, nll, recommend}``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def _demo(args) -> int:
    from .demo import run_demo

    try:
        run_demo(out=args.out, n_samples=args.n, step_counts=tuple(args.steps), seed=args.seed,
                 device=args.device, progress=not args.no_progress)  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


class OneLineErrors(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose parse errors (``--nfe ten``, a missing option) are one line on
    stderr with exit status 2, as every other error of the commands is; the usage it would
    print first is one ``--help`` away. Subcommands' parsers are of the same class."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="python -m scoresde", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="every sampler on an exact 2-D Gaussian mixture: table + PNG"
    )
    demo.add_argument("--out", default="scoresde_demo.png", help="PNG to write")
    demo.add_argument("--n", type=int, default=2000, help="number of samples")
    demo.add_argument(
        "--steps", type=int, nargs="+", default=[5, 10, 20, 50], help="n_steps values"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the prior draws and the noise")
    demo.add_argument("--device", default="cpu", help="cpu or cuda")
    demo.add_argument(
        "--no-progress", action="store_true", help="silence per-sampler progress lines"
    )
    demo.set_defaults(func=_demo)
    from .recommend import add_recommend_parser
    from .train_cli import add_train_parsers

    add_train_parsers(sub)
    add_recommend_parser(sub)
    for command in sub.choices.values():
        _show_defaults(command)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: X)`` to the help of every option with a default its help does not
    already state (flags and options without a default are left alone)."""
    for action in parser._actions:
        if (
            any(action.default is v for v in (None, False, argparse.SUPPRESS))
            or action.help == argparse.SUPPRESS
            or not action.option_strings
            or "default" in (action.help or "")
        ):
            continue
        shown = (
            " ".join(map(str, action.default))
            if isinstance(action.default, list)
            else "%(default)s"
        )
        action.help = f"{action.help} (default: {shown})" if action.help else f"default: {shown}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
