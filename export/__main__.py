"""``python -m export --help``: offline training, export and evaluation (needs the ``export`` extra: torch)."""

from __future__ import annotations

import argparse
import importlib

# Each sub-command lives in its own module exposing ``add_parser(subparsers)``.
COMMANDS = ("export.cam", "export.localize", "export.pose")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # sub-command not written yet
                continue
            raise
        module.add_parser(sub)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
