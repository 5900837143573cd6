"""``python -m export --help``: offline training, export and evaluation (needs the ``export`` extra: torch)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each task's command line lives in its package's ``cli`` module, exposing ``add_parser(subparsers)``.
COMMANDS = (
    "export.cam.cli",
    "export.cam.onnx_cam",
    "export.localize.cli",
    "export.localize.finetune.cli",
    "export.pose.cli",
    "export.pose.scenes",
)

# Sub-commands that must run where only some packages are installed: only their own module is imported (the
# others import torch, onnx, scipy, ... at module level or through their imports).  localize-pack and
# localize-finetune: torch, numpy and Pillow (a bare GPU machine); onnx-cam: onnx, onnxruntime (no torch).
STANDALONE = {
    "localize-pack": "export.localize.finetune.cli",
    "localize-finetune": "export.localize.finetune.cli",
    "onnx-cam": "export.cam.onnx_cam",
}


def modules_for(argv: list[str]) -> tuple[str, ...]:
    """The modules to import for ``argv``: all of them, or only a standalone command's own."""
    return (STANDALONE[argv[0]],) if argv and argv[0] in STANDALONE else COMMANDS


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default: the process's arguments) and run the chosen sub-command."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in modules_for(argv):
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
