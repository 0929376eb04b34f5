"""`devloop render`: print an overlay's manifests exactly as `kubectl kustomize` renders them."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from devloop.manifests import kustomize


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render an overlay with the real kustomize",
        description="Render kustomize/overlays/OVERLAY with `kubectl kustomize` and print it; "
        "pipe it to `kubectl apply -f -` to deploy without Tilt.",
    )
    parser.add_argument("--overlay", default="dev", help="overlay name (default: dev)")
    parser.add_argument("--output", "-o", help="write the YAML to this file instead of stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    rendered = kustomize.render_overlay(args.overlay)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(rendered)
    else:
        sys.stdout.write(rendered)
    kinds = Counter(obj["kind"] for obj in kustomize.load_objects(rendered))
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    print(f"overlay {args.overlay}: {summary}", file=sys.stderr)
    return 0
