"""`devloop model-cache backup|restore|verify`: keep the model cache across a cluster reinstall.

The engine's model cache (the PVC mounted at /models: Hugging Face downloads, generated models,
compile caches) takes gigabytes and minutes to fill. `backup` copies it to a local backup
directory; `restore` puts it into a fresh cluster's pod (or a local directory) so the new engine
starts without downloading anything. Not to be confused with `devloop cache`, which manages the
gateway's *response* cache.

A backup directory holds:

    data/             the files, in the volume's layout (symlinks kept as symlinks: the Hugging
                      Face cache links snapshots/<rev>/<file> to blobs/<hash>)
    MANIFEST.sha256   one `<sha256>  <path>` line per file: `cd data && sha256sum -c ../MANIFEST.sha256`
    manifest.json     the same with sizes, symlinks, the source and the creation time

Backups are resumable: files are copied into `<backup>.partial/` and each finished file is
appended to its journal (`done.jsonl`) once it is in place, so an interrupted backup run again
skips every file already copied (same size and modification time at the source) and redoes only
the rest. The backup appears under its final name only when complete. Restore checks every
checksum before it writes anything and again as it copies.

Sources and targets: a local directory (`--from-dir`/`--to-dir`), or the engine pod through
`kubectl exec` (`--from-pod`/`--to-pod`), which reads files with `cat`, lists them with the
image's python3 and restores with `tar` + `sha256sum -c` inside the pod.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from devloop.common.errors import DevloopError, UsageError

MANIFEST_JSON = "manifest.json"
MANIFEST_SHA256 = "MANIFEST.sha256"
DATA_DIR = "data"
JOURNAL = "done.jsonl"
PARTIAL_SUFFIX = ".partial"
FORMAT_VERSION = 1
CHUNK = 1 << 20  # bytes read per step: large enough for disk speed, small for memory

DEFAULT_NAMESPACE = "vllm-dev"
DEFAULT_SELECTOR = "app.kubernetes.io/name=llm-engine"
DEFAULT_CONTAINER = "vllm"
DEFAULT_POD_PATH = "/models"


@dataclass(frozen=True)
class Entry:
    """One thing in the cache: a regular file (size, mtime) or a symlink (target)."""

    path: str  # relative, '/'-separated
    size: int = 0
    mtime: float = 0.0
    link: str | None = None


@dataclass
class BackupResult:
    path: Path
    files: int = 0
    links: int = 0
    bytes: int = 0
    copied: int = 0  # files copied by this run
    skipped: int = 0  # files a previous, interrupted run had finished already


class Source(Protocol):
    """Where a backup reads from."""

    description: str

    def entries(self) -> list[Entry]: ...

    def open(self, path: str) -> BinaryIO: ...


def safe_relative(path: str) -> str:
    """`path` if it is relative and stays inside its root; a listing or manifest that names
    `../x` or `/etc/x` would otherwise write outside the target."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or path != pure.as_posix():
        raise DevloopError(f"refusing unsafe path {path!r} (absolute, '..' or not normalised)")
    return path


class LocalSource:
    """A directory on this machine (the volume's contents, or a copy of them)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"dir:{self.root.resolve()}"
        if not self.root.is_dir():
            raise UsageError(f"{self.root}: no such directory")

    def entries(self) -> list[Entry]:
        found = []
        for directory, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            base = Path(directory)
            # A symlink to a directory is listed in dirnames; os.walk does not descend into it.
            for name in sorted(filenames) + [d for d in dirnames if (base / d).is_symlink()]:
                full = base / name
                rel = full.relative_to(self.root).as_posix()
                info = full.lstat()
                if full.is_symlink():
                    found.append(Entry(rel, link=os.readlink(full)))
                elif full.is_file():
                    found.append(Entry(rel, size=info.st_size, mtime=info.st_mtime))
        return sorted(found, key=lambda entry: entry.path)

    def open(self, path: str) -> BinaryIO:
        return open(self.root / safe_relative(path), "rb")


# Runs in the pod with the image's python3 (the engine image has it; busybox find has no -printf).
_LIST_SCRIPT = r"""
import json, os, sys
root = sys.argv[1]
for directory, dirs, files in os.walk(root):
    for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
        full = os.path.join(directory, name)
        rel = os.path.relpath(full, root)
        st = os.lstat(full)
        if os.path.islink(full):
            print(json.dumps({"path": rel, "link": os.readlink(full)}))
        elif os.path.isfile(full):
            print(json.dumps({"path": rel, "size": st.st_size, "mtime": st.st_mtime}))
"""


@dataclass
class Pod:
    """A container in a pod, reached with `kubectl exec` (the engine's by default)."""

    namespace: str = DEFAULT_NAMESPACE
    name: str | None = None  # None: the first pod matching `selector`
    container: str = DEFAULT_CONTAINER
    path: str = DEFAULT_POD_PATH
    kubectl: str = "kubectl"
    selector: str = DEFAULT_SELECTOR

    def resolve(self) -> str:
        if self.name:
            return self.name
        out = self._run(["get", "pods", "-l", self.selector, "--field-selector=status.phase=Running",
                         "-o", "jsonpath={.items[*].metadata.name}"], exec_in_pod=False)
        names = out.decode().split()
        if not names:
            raise DevloopError(
                f"no running pod matches {self.selector} in namespace {self.namespace}: deploy the "
                "overlay first (`tilt up` or `kubectl apply -k`), or name one with --pod"
            )
        self.name = names[0]
        return self.name

    def exec_argv(self, command: list[str], stdin: bool = False) -> list[str]:
        return [self.kubectl, "exec", *(["-i"] if stdin else []), "-n", self.namespace,
                self.resolve(), "-c", self.container, "--", *command]

    def _run(self, args: list[str], exec_in_pod: bool = True, stdin: bytes | None = None) -> bytes:
        argv = self.exec_argv(args, stdin is not None) if exec_in_pod else [
            self.kubectl, "-n", self.namespace, *args]
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, check=False)
        except FileNotFoundError:
            raise DevloopError(f"{self.kubectl} not found: install kubectl") from None
        if done.returncode != 0:
            raise DevloopError(f"`{' '.join(argv)}` failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def run(self, command: list[str], stdin: bytes | None = None) -> bytes:
        return self._run(command, stdin=stdin)


class PodSource:
    """The volume as the engine pod sees it."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.description = f"pod:{pod.namespace}/{pod.resolve()}:{pod.path}"

    def entries(self) -> list[Entry]:
        out = self.pod.run(["python3", "-c", _LIST_SCRIPT, self.pod.path])
        found = [Entry(**json.loads(line)) for line in out.decode().splitlines() if line.strip()]
        return sorted(found, key=lambda entry: entry.path)

    def open(self, path: str) -> BinaryIO:
        argv = self.pod.exec_argv(["cat", f"{self.pod.path.rstrip('/')}/{safe_relative(path)}"])
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return _ProcessReader(process, argv)


class _ProcessReader(io.RawIOBase):
    """A subprocess's stdout as a file; closing it checks the exit code."""

    def __init__(self, process: subprocess.Popen, argv: list[str]) -> None:
        self.process, self.argv = process, argv

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.process.stdout.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self.process.stdout.close()
        code = self.process.wait()
        if code != 0:
            error = self.process.stderr.read().decode(errors="replace").strip()
            raise DevloopError(f"`{' '.join(self.argv)}` failed ({code}): {error}")


# -- backup ------------------------------------------------------------------------------------


def _read_journal(journal: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if not journal.is_file():
        return done
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the line being written when the run was killed
        done[record["path"]] = record
    return done


def _copy_hashed(source: BinaryIO, target: Path) -> tuple[int, str]:
    """Copy to `target`, returning (bytes, sha256 hex); fsync so the journal never runs ahead
    of the data on disk."""
    digest = hashlib.sha256()
    size = 0
    with source, open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def backup(
    source: Source,
    destination: Path,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BackupResult:
    """Copy every file of `source` into the backup directory `destination` (see the module
    docstring). An existing backup is replaced only with `force`."""
    destination = Path(destination)
    if destination.exists() and not force:
        raise DevloopError(
            f"{destination} exists: choose another path, or pass --force to replace it"
        )
    staging = destination.with_name(destination.name + PARTIAL_SUFFIX)
    data = staging / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    journal_path = staging / JOURNAL
    done = _read_journal(journal_path)
    result = BackupResult(destination)
    entries = source.entries()
    records: list[dict] = []
    with open(journal_path, "a", encoding="utf-8") as journal:
        for entry in entries:
            rel = safe_relative(entry.path)
            target = data / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            previous = done.get(rel)
            if entry.link is not None:
                if target.is_symlink() or target.exists():
                    target.unlink()
                os.symlink(entry.link, target)
                record = {"path": rel, "link": entry.link}
                result.links += 1
            elif (
                previous is not None
                and previous.get("size") == entry.size
                and previous.get("mtime") == entry.mtime
                and target.is_file()
                and target.stat().st_size == entry.size
            ):
                records.append(previous)
                result.files += 1
                result.bytes += entry.size
                result.skipped += 1
                continue
            else:
                partial = target.with_name(target.name + ".tmp")
                size, sha256 = _copy_hashed(source.open(rel), partial)
                if size != entry.size:
                    raise DevloopError(
                        f"{rel}: read {size} bytes but the source listed {entry.size} (is the "
                        "engine still downloading? wait for it, then run the backup again)"
                    )
                os.replace(partial, target)
                record = {"path": rel, "size": size, "mtime": entry.mtime, "sha256": sha256}
                result.files += 1
                result.bytes += size
                result.copied += 1
                if progress:
                    progress(f"{rel} ({size} bytes)")
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            records.append(record)
    files = [r for r in records if "link" not in r]
    links = [r for r in records if "link" in r]
    manifest = {
        "format": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source.description,
        "files": [{"path": r["path"], "size": r["size"], "sha256": r["sha256"]} for r in files],
        "links": [{"path": r["path"], "target": r["link"]} for r in links],
        "total_bytes": sum(r["size"] for r in files),
    }
    (staging / MANIFEST_JSON).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    (staging / MANIFEST_SHA256).write_text(
        "".join(f"{r['sha256']}  {r['path']}\n" for r in files), encoding="utf-8"
    )
    journal_path.unlink()
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(staging, destination)
    return result


# -- verify and restore ------------------------------------------------------------------------


def load_manifest(backup_dir: Path) -> dict:
    path = Path(backup_dir) / MANIFEST_JSON
    if not path.is_file():
        partial = Path(str(backup_dir) + PARTIAL_SUFFIX)
        hint = (f"; {partial} is an unfinished backup: run the backup again to complete it"
                if partial.is_dir() else "")
        raise DevloopError(f"{backup_dir} is not a complete backup (no {MANIFEST_JSON}){hint}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT_VERSION:
        raise DevloopError(f"{path}: unknown format {manifest.get('format')!r}")
    for item in manifest["files"] + manifest["links"]:
        safe_relative(item["path"])
    return manifest


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(backup_dir: Path) -> list[str]:
    """Every problem with the backup: missing, resized or altered files. Empty when intact."""
    manifest = load_manifest(backup_dir)
    data = Path(backup_dir) / DATA_DIR
    problems = []
    for item in manifest["files"]:
        path = data / item["path"]
        if not path.is_file() or path.is_symlink():
            problems.append(f"{item['path']}: missing")
        elif path.stat().st_size != item["size"]:
            problems.append(f"{item['path']}: {path.stat().st_size} bytes, manifest says {item['size']}")
        elif _sha256_file(path) != item["sha256"]:
            problems.append(f"{item['path']}: sha256 mismatch (the file is corrupt)")
    for item in manifest["links"]:
        path = data / item["path"]
        if not path.is_symlink() or os.readlink(path) != item["target"]:
            problems.append(f"{item['path']}: symlink to {item['target']} missing or changed")
    return problems


def _require_intact(backup_dir: Path) -> dict:
    problems = verify(backup_dir)
    if problems:
        raise DevloopError(
            f"{backup_dir} failed verification, nothing was restored:\n  - " + "\n  - ".join(problems)
        )
    return load_manifest(backup_dir)


def restore_to_dir(backup_dir: Path, target: Path, force: bool = False) -> int:
    """Copy a verified backup into `target`; returns the number of files. A non-empty target is
    written into (same paths overwritten, others left) only with `force`."""
    manifest = _require_intact(backup_dir)
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not force:
        raise DevloopError(f"{target} is not empty: pass --force to restore over its contents")
    data = Path(backup_dir) / DATA_DIR
    for item in manifest["files"]:
        destination = target / item["path"]
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".restore-tmp")
        _, sha256 = _copy_hashed(open(data / item["path"], "rb"), partial)  # noqa: SIM115 (closed by _copy_hashed)
        if sha256 != item["sha256"]:
            partial.unlink()
            raise DevloopError(f"{item['path']}: changed while it was being restored; try again")
        os.replace(partial, destination)
    for item in manifest["links"]:
        destination = target / item["path"]
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.is_symlink() or destination.is_file():
            destination.unlink()
        os.symlink(item["target"], destination)
    return len(manifest["files"])


def restore_to_pod(backup_dir: Path, pod: Pod, force: bool = False) -> int:
    """Stream a verified backup into the pod's volume with tar, then check every file's sha256
    there with `sha256sum -c`."""
    manifest = _require_intact(backup_dir)
    root = pod.path.rstrip("/") or "/"
    listing = pod.run(["python3", "-c", "import os,sys; print(len(os.listdir(sys.argv[1])))", root])
    if int(listing.decode().strip() or 0) and not force:
        raise DevloopError(
            f"{root} in pod {pod.resolve()} is not empty: pass --force to restore over it"
        )
    argv = pod.exec_argv(["tar", "-xf", "-", "-C", root], stdin=True)
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    data = Path(backup_dir) / DATA_DIR
    try:
        # A streaming tar ("w|"): file contents go to kubectl as they are read, never whole in
        # memory; symlinks are stored as symlinks.
        with tarfile.open(fileobj=process.stdin, mode="w|") as archive:
            for item in manifest["files"] + manifest["links"]:
                archive.add(data / item["path"], arcname=item["path"], recursive=False)
        process.stdin.close()
    except BrokenPipeError:
        pass  # tar in the pod exited early: its error is reported below
    if process.wait() != 0:
        raise DevloopError(f"`{' '.join(argv)}` failed: {process.stderr.read().decode().strip()}")
    checks = (Path(backup_dir) / MANIFEST_SHA256).read_bytes()
    pod.run(["sh", "-c", f"cd '{root}' && sha256sum -c --quiet -"], stdin=checks)
    return len(manifest["files"])


# -- the command -------------------------------------------------------------------------------


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

    backup_parser = actions.add_parser("backup", help="copy the model cache to BACKUP_DIR")
    backup_parser.add_argument("backup_dir", type=Path, metavar="BACKUP_DIR")
    source = backup_parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-dir", type=Path, help="a local directory holding the cache")
    source.add_argument("--from-pod", nargs="?", const="", metavar="POD",
                        help=f"the engine pod (default: the first running {DEFAULT_SELECTOR})")
    pod_options(backup_parser)

    restore_parser = actions.add_parser("restore", help="verify BACKUP_DIR and copy it back")
    restore_parser.add_argument("backup_dir", type=Path, metavar="BACKUP_DIR")
    target = restore_parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-dir", type=Path, help="a local directory")
    target.add_argument("--to-pod", nargs="?", const="", metavar="POD",
                        help=f"the engine pod (default: the first running {DEFAULT_SELECTOR})")
    pod_options(restore_parser)

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

