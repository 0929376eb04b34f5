"""Check a backup against its checksums and copy it back: into a directory, or streamed with tar
into the engine pod (checked again there with `sha256sum -c`). Nothing is written unless the
whole backup verifies."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

from devloop.common.errors import DevloopError
from devloop.ops.modelcache.archive import (
    DATA_DIR,
    MANIFEST_SHA256,
    copy_hashed,
    load_manifest,
    sha256_file,
)
from devloop.ops.modelcache.sources import Pod


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
        elif sha256_file(path) != item["sha256"]:
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
        _, sha256 = copy_hashed(open(data / item["path"], "rb"), partial)  # noqa: SIM115 (closed by copy_hashed)
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


