"""`devloop model-cache backup|restore|verify`: the CLI over archive.py and restore.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devloop.ops.modelcache.archive import backup, load_manifest
from devloop.ops.modelcache.restore import restore_to_dir, restore_to_pod, verify
from devloop.ops.modelcache.sources import (
    DEFAULT_CONTAINER,
    DEFAULT_NAMESPACE,
    DEFAULT_POD_PATH,
    DEFAULT_SELECTOR,
    LocalSource,
    Pod,
    PodSource,
    Source,
)


def _pod_from(args: argparse.Namespace, name: str | None) -> Pod:
    return Pod(namespace=args.namespace, name=name or None, container=args.container,
               path=args.pod_path)


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model-cache",
        help="back up the model cache volume to a local directory and restore it",
        description="Back up the engine's model cache (the /models volume) with a sha256 "
        "manifest, resumably, and restore it into a fresh cluster or a directory. (The gateway's "
        "response cache is `devloop cache`.)",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def pod_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--namespace", "-n", default=DEFAULT_NAMESPACE,
                         help=f"the pod's namespace (default: {DEFAULT_NAMESPACE})")
        sub.add_argument("--container", default=DEFAULT_CONTAINER,
                         help=f"container to exec into (default: {DEFAULT_CONTAINER})")
        sub.add_argument("--pod-path", default=DEFAULT_POD_PATH,
                         help=f"the volume's mount path in the pod (default: {DEFAULT_POD_PATH})")
        sub.add_argument("--force", action="store_true",
                         help="replace an existing backup / write into a non-empty target")

    for action, help_text, prefix, dir_help in (
        ("backup", "copy the model cache to BACKUP_DIR", "from",
         "a local directory holding the cache"),
        ("restore", "verify BACKUP_DIR and copy it back", "to", "a local directory"),
    ):
        action_parser = actions.add_parser(action, help=help_text)
        action_parser.add_argument("backup_dir", type=Path, metavar="BACKUP_DIR")
        # Exactly one of --from-dir/--from-pod (backup) or --to-dir/--to-pod (restore).
        where = action_parser.add_mutually_exclusive_group(required=True)
        where.add_argument(f"--{prefix}-dir", type=Path, help=dir_help)
        where.add_argument(f"--{prefix}-pod", nargs="?", const="", metavar="POD",
                           help=f"the engine pod (default: the first running {DEFAULT_SELECTOR})")
        pod_options(action_parser)

    verify_parser = actions.add_parser("verify", help="check BACKUP_DIR against its checksums")
    verify_parser.add_argument("backup_dir", type=Path, metavar="BACKUP_DIR")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "verify":
        problems = verify(args.backup_dir)
        for problem in problems:
            print(f"FAIL  {problem}")
        manifest = load_manifest(args.backup_dir)
        status = "corrupt" if problems else "ok"
        print(f"{status}: {args.backup_dir} ({len(manifest['files'])} files, "
              f"{manifest['total_bytes']} bytes)")
        return 1 if problems else 0
    if args.action == "backup":
        source: Source = (LocalSource(args.from_dir) if args.from_dir is not None
                          else PodSource(_pod_from(args, args.from_pod)))
        result = backup(source, args.backup_dir, force=args.force,
                        progress=lambda text: print(f"copied {text}", file=sys.stderr, flush=True))
        print(f"backed up {result.files} files ({result.bytes} bytes) and {result.links} symlinks "
              f"from {source.description} to {result.path} ({result.copied} copied now, "
              f"{result.skipped} from an earlier interrupted run)")
        return 0
    if args.to_dir is not None:
        count = restore_to_dir(args.backup_dir, args.to_dir, force=args.force)
        where = str(args.to_dir)
    else:
        pod = _pod_from(args, args.to_pod)
        count = restore_to_pod(args.backup_dir, pod, force=args.force)
        where = f"pod {pod.namespace}/{pod.name}:{pod.path}"
    print(f"restored {count} files into {where}; checksums verified")
    return 0

