"""Writing a model-cache backup directory (the layout is in the package docstring): the
resumable copy with its journal, then the manifests. Also reads a backup's manifest back."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from devloop.common.errors import DevloopError
from devloop.ops.modelcache.sources import Entry, Source, safe_relative

MANIFEST_JSON = "manifest.json"
MANIFEST_SHA256 = "MANIFEST.sha256"
DATA_DIR = "data"
JOURNAL = "done.jsonl"
PARTIAL_SUFFIX = ".partial"
FORMAT_VERSION = 1
CHUNK = 1 << 20  # bytes read per step: large enough for disk speed, small for memory


@dataclass
class BackupResult:
    path: Path
    files: int = 0
    links: int = 0
    bytes: int = 0
    copied: int = 0  # files copied by this run
    skipped: int = 0  # files a previous, interrupted run had finished already


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


def copy_hashed(source: BinaryIO, target: Path) -> tuple[int, str]:
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


def _is_done(previous: dict | None, entry: Entry, target: Path) -> bool:
    """Whether an interrupted run already copied this file, unchanged since at the source."""
    return (
        previous is not None
        and previous.get("size") == entry.size
        and previous.get("mtime") == entry.mtime
        and target.is_file()
        and target.stat().st_size == entry.size
    )


def _copy_entry(source: Source, entry: Entry, rel: str, target: Path,
                result: BackupResult) -> dict:
    """Copy one symlink or file into the staging tree; its journal record."""
    if entry.link is not None:
        if target.is_symlink() or target.exists():
            target.unlink()
        os.symlink(entry.link, target)
        result.links += 1
        return {"path": rel, "link": entry.link}
    partial = target.with_name(target.name + ".tmp")
    size, sha256 = copy_hashed(source.open(rel), partial)
    if size != entry.size:
        raise DevloopError(
            f"{rel}: read {size} bytes but the source listed {entry.size} (is the "
            "engine still downloading? wait for it, then run the backup again)"
        )
    os.replace(partial, target)
    result.files += 1
    result.bytes += size
    result.copied += 1
    return {"path": rel, "size": size, "mtime": entry.mtime, "sha256": sha256}


def _write_manifests(staging: Path, source: Source, records: list[dict]) -> None:
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


def backup(
    source: Source,
    destination: Path,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BackupResult:
    """Copy every file of `source` into the backup directory `destination` (see the package
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
    records: list[dict] = []
    with open(journal_path, "a", encoding="utf-8") as journal:
        for entry in source.entries():
            rel = safe_relative(entry.path)
            target = data / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            previous = done.get(rel)
            if entry.link is None and _is_done(previous, entry, target):
                records.append(previous)
                result.files += 1
                result.bytes += entry.size
                result.skipped += 1
                continue
            record = _copy_entry(source, entry, rel, target, result)
            if progress and "sha256" in record:
                progress(f"{rel} ({record['size']} bytes)")
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            records.append(record)
    _write_manifests(staging, source, records)
    journal_path.unlink()
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(staging, destination)
    return result


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
