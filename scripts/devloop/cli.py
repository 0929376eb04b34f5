"""The `devloop` command: one entry point, one subcommand per module.

Each module named in SUBCOMMAND_MODULES exposes `add_subcommand(subparsers)`, which adds its
parser and sets `handler=` to a function taking the parsed arguments and returning an exit code.
Modules must keep heavy imports (torch, vllm, aiohttp) inside their handlers: every invocation
imports all of them to build the help text.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from devloop import __version__
from devloop.common.errors import DEBUG_ENV, DevloopError

SUBCOMMAND_MODULES = (
    "devloop.manifests.render",
    "devloop.engine.entrypoint",
    "devloop.engine.health",
    "devloop.engine.serve",
    "devloop.engine.tinymodel",
    "devloop.engine.llamacpp.command",
    "devloop.manifests.validate",
    "devloop.bench.command",
    "devloop.bench.compare",
    "devloop.bench.membw",
    "devloop.bench.dashboard",
    "devloop.gateway",
    "devloop.gateway.cache.command",
    "devloop.gateway.routing.bench",
    "devloop.ops.modelcache.command",
    "devloop.bench.reload",
    "devloop.ops.doctor.command",
)


def _installed(module_name: str) -> bool:
    """Whether the sub-package (devloop.<name>) of a subcommand module is installed. The images
    Tilt builds carry only the sub-packages their process runs (the engine's has no gateway/,
    the gateway's no engine/), and the command there offers only those subcommands. A module
    missing from a sub-package that is there still fails loudly."""
    return importlib.util.find_spec(".".join(module_name.split(".")[:2])) is not None


def build_parser(modules: Sequence[str] = SUBCOMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devloop",
        description="Develop a CPU vLLM service on local Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # dest is not "command": a subcommand may have a --command flag of its own (bench-reload).
    subparsers = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    for module_name in filter(_installed, modules):
        importlib.import_module(module_name).add_subcommand(subparsers)
    return parser


def main(
    argv: Sequence[str] | None = None, modules: Sequence[str] = SUBCOMMAND_MODULES
) -> int:
    """Run one subcommand; `modules` narrows the parser to some (a reloaded gateway worker
    imports only its own)."""
    args = build_parser(modules).parse_args(argv)
    # The command line as given, for handlers that start copies of themselves (gateway --reload).
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.handler(args) or 0)
    except DevloopError as error:
        print(f"devloop {args.subcommand}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the last resort: one line, never a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"devloop {args.subcommand}: unexpected error: {type(error).__name__}: {error}\n"
            f"  this is a bug in devloop; run again with {DEBUG_ENV}=1 for the traceback",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
