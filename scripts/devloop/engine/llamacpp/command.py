"""`devloop llamacpp`: llama.cpp helpers. `tiny-gguf` writes the offline tiny model as a GGUF
file (generated, converted by llama.cpp's convert_hf_to_gguf.py; no download), for Tilt's
`--model=tiny` image and anyone who wants a file llama-server loads in a second. `which` prints
the llama-server devloop would run (binary.find_server)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from devloop.common.errors import UsageError
from devloop.engine.llamacpp import binary, gguf


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("llamacpp", help="llama.cpp helpers: the tiny GGUF, which server")
    commands = parser.add_subparsers(dest="llamacpp_command", required=True, metavar="COMMAND")
    tiny = commands.add_parser("tiny-gguf", help="write the offline tiny model as a GGUF file")
    tiny.add_argument("--kind", default="q8_0", choices=(*gguf.CONVERTED, *gguf.QUANTIZED),
                      help="tensor type (default: q8_0; q4_0 needs llama-quantize)")
    tiny.add_argument("--out", type=Path, help="copy it here (default: print the cached file)")
    tiny.set_defaults(handler=run_tiny)
    which = commands.add_parser("which", help="print the llama-server devloop runs")
    which.set_defaults(handler=run_which)


def run_tiny(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.is_dir():
        raise UsageError(f"--out {args.out} is a directory: give the file's path")
    made = gguf.tiny_gguf(args.kind)
    if args.out is None:
        print(made)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(made, args.out)
    print(args.out)
    return 0


def run_which(args: argparse.Namespace) -> int:
    print(binary.find_server())
    return 0
