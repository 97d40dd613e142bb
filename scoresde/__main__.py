"""``python -m scoresde``: minimal entry point for the training subcommands (the lead's cli.py
replaces this file with the full command set, ``demo`` included)."""

import argparse
import sys

from .train_cli import add_train_parsers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scoresde")
    add_train_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
