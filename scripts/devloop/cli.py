"""The `devloop` command: one entry point, one subcommand per module.

Each module named in SUBCOMMAND_MODULES exposes `add_subcommand(subparsers)`, which adds its
parser and sets `handler=` to a function taking the parsed arguments and returning an exit code.
Modules must keep heavy imports (torch, vllm, aiohttp) inside their handlers: every invocation
imports all of them to build the help text.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from devloop import __version__
from devloop.errors import DevloopError

SUBCOMMAND_MODULES = (
    "devloop.render",
    "devloop.entrypoint",
    "devloop.health",
    "devloop.serve",
    "devloop.tinymodel",
    "devloop.validate",
    "devloop.bench",
    "devloop.benchcompare",
    "devloop.membw",
    "devloop.dashboard",
    "devloop.gateway",
    "devloop.cache_cli",
    "devloop.modelcache",
    "devloop.reloadbench",
    "devloop.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devloop",
        description="Develop a CPU vLLM service on local Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_subcommand(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except DevloopError as error:
        print(f"devloop {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
