"""The warm-start cache on the model-cache volume: what names an entry, and how one is written.

vLLM's CPU backend spends most of an AWQ model's start converting the checkpoint into its
kernel's layout (devloop.engine.warmloader keeps the result). This module holds the part that
needs no vLLM: the key of an entry and the store.

- The key is a SHA-256 over everything that makes a kept state valid for a start: the model
  (its id, revision and a fingerprint of its files), the vLLM and torch versions, dtype,
  quantization, the parallel layout and rank, the CPU flags that pick kernels (AMX, AVX-512),
  the environment that picks a kernel path and this format's schema. A change to any of them
  is another key, so another entry: it is computed again, never reused.
- An entry is written into a private temporary directory, every file fsynced, the marker
  (the key and the file sizes) written last, then renamed into place in one rename(2). A
  reader uses only a directory whose marker names its key and whose files have the recorded
  sizes, so a writer killed half-way leaves nothing a reader takes. Two writers (two replicas
  starting together) both compute; the first rename wins, the second finds the name taken and
  drops its copy: the entry is never a mix of the two.

It imports nothing heavy: the entrypoint uses it before exec.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("devloop.warmcache")

SCHEMA = 1  # bump when the layout of an entry or the meaning of its files changes
LOAD_FORMAT = "devloop_warm"  # the vLLM --load-format the plugin registers
PLUGIN_NAME = "devloop_warmstart"  # its entry point in pyproject.toml (vllm.general_plugins)
PLUGIN_GROUP = "vllm.general_plugins"
DIR_ENV = "DEVLOOP_WARM_START_DIR"  # where entries live; the entrypoint sets it
# The launch's key (launch_key), which the entrypoint passes to the loader and the loader writes
# into the marker: how `devloop entrypoint --prepare` finds a prepared entry without vLLM.
LAUNCH_ENV = "DEVLOOP_WARM_START_LAUNCH"
SUBDIR = "devloop-warm-start"  # under VLLM_CACHE_ROOT, on the model-cache volume
MARKER = "complete.json"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 24 * 3600  # a temporary directory this old belongs to a dead writer

# The /proc/cpuinfo flags vLLM's and oneDNN's CPU kernels choose code paths by: a kept layout
# (AMX-blocked int4, say) is only valid on a CPU with the same ones.
KERNEL_FLAGS = (
    "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "vsx",
)
# Environment variables that change what process_weights_after_loading produces on CPU.
KERNEL_ENV = ("VLLM_CPU_INT4_W4A8", "VLLM_CPU_SGL_KERNEL", "VLLM_ZENTORCH_WEIGHT_PREPACK")
_SAMPLE_BYTES = 1 << 16  # per sampled chunk of a weights file
_SAMPLES_PER_FILE = 16


class EntryError(Exception):
    """An entry cannot be written (the model's state is not something this format keeps)."""


def cpu_kind(cpuinfo: str | None = None) -> dict[str, Any]:
    """The machine architecture and which kernel-picking flags its CPU has."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features", "cpu"):  # x86, Arm, POWER
            flags.update(value.split())
    return {"arch": platform.machine(), "flags": sorted(f for f in KERNEL_FLAGS if f in flags)}


def model_fingerprint(model_dir: Path) -> str:
    """A SHA-256 over a model directory's config files and its weights files' names, sizes,
    safetensors headers and 16 chunks of 64 KiB spread over each file.

    Hashing every byte of an 8B checkpoint would cost a warm start ~10 s; the header names every
    tensor's dtype, shape and offset, and the sampled chunks tell two checkpoints of one shape
    apart (another seed, another fine-tune)."""
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    for path in files:
        if path.suffix == ".json" and path.name.startswith(("config", "quant", "model.")):
            digest.update(f"{path.name}\0".encode() + path.read_bytes())
        elif path.suffix in (".safetensors", ".bin", ".pt"):
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            with path.open("rb") as handle:
                if path.suffix == ".safetensors":
                    header_len = int.from_bytes(handle.read(8), "little")
                    digest.update(handle.read(min(header_len, 100 << 20)))
                for index in range(_SAMPLES_PER_FILE):
                    handle.seek(size * index // _SAMPLES_PER_FILE)
                    digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def kernel_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    return {name: env[name] for name in KERNEL_ENV if name in env}


def cache_key(fields: Mapping[str, Any]) -> str:
    """The entry's key: SHA-256 of the fields as canonical JSON (schema included)."""
    canonical = json.dumps({"schema": SCHEMA, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def entry_dir(root: Path, label: str, key: str) -> Path:
    """root/<model label>-<key prefix>: readable in `ls`, unique by key."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "model"
    return root / f"{safe[:60]}-{key[:24]}"


def find_entry(root: Path, label: str, key: str) -> Path | None:
    """The complete entry for `key`, or None (absent, half-written, or for another key)."""
    directory = entry_dir(root, label, key)
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("key") != key:
        log.warning("warm-start entry %s names another key: ignored", directory)
        return None
    for name, size in (marker.get("files") or {}).items():
        try:
            if (directory / name).stat().st_size != size:
                log.warning("warm-start entry %s: %s has the wrong size: ignored", directory, name)
                return None
        except OSError:
            log.warning("warm-start entry %s: %s is missing: ignored", directory, name)
            return None
    return directory


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_entry(root: Path, label: str, key: str, fields: Mapping[str, Any],
                fill: Callable[[Path], Iterable[str]], launch: str | None = None) -> Path:
    """Write an entry atomically and return its directory.

    `fill(directory)` writes the entry's files into a private temporary directory and returns
    their names. Each is fsynced, then the marker, then the directory is renamed into place.
    When another writer got there first, its entry stays and this one is dropped."""
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    final = entry_dir(root, label, key)
    temp = root / f"{TEMP_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        names = list(fill(temp))
        sizes = {}
        for name in names:
            _fsync(temp / name)
            sizes[name] = (temp / name).stat().st_size
        marker = {"key": key, "launches": [launch] if launch else [], "schema": SCHEMA,
                  "fields": dict(fields),
                  "files": sizes,
                  "written_at": time.time(), "writer_pid": os.getpid()}
        (temp / MARKER).write_text(json.dumps(marker, indent=2, default=str) + "\n",
                                   encoding="utf-8")
        _fsync(temp / MARKER)
        _fsync(temp)
        if final.exists() and find_entry(root, label, key) is None:
            _set_aside(final)  # a damaged entry (a disk that filled up, a hand edit)
        try:
            os.rename(temp, final)
        except OSError:
            if find_entry(root, label, key) is None:
                raise
            log.info("warm-start entry %s was written by another process first", final)
            shutil.rmtree(temp, ignore_errors=True)
            return final
        _fsync(root)
        return final
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _set_aside(directory: Path) -> None:
    """Move an unusable entry out of the way (then delete it), so a good one can take its name."""
    aside = directory.with_name(f"{TEMP_PREFIX}broken-{directory.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(directory, aside)
    except OSError:
        return  # another writer moved it first
    log.warning("warm-start entry %s was unusable: replaced", directory)
    shutil.rmtree(aside, ignore_errors=True)


def remove_stale_temps(root: Path, max_age: float = STALE_TEMP_SECONDS) -> None:
    """Delete temporary directories of writers that died long ago (never a live one's)."""
    now = time.time()
    for path in root.glob(f"{TEMP_PREFIX}*"):
        try:
            if now - path.stat().st_mtime > max_age:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def launch_key(server_argv: list[str], env: Mapping[str, str], model: str) -> str:
    """What a launch decides about the state vLLM computes at load, known before vLLM runs: its
    arguments (host and port aside), versions, CPU, kernel environment and the model's files.
    The loader's own key stays the judge of an entry's validity; this one only finds it."""
    skip = {"--host", "--port"}
    args = [a for i, a in enumerate(server_argv) if a not in skip
            and (i == 0 or server_argv[i - 1] not in skip)]
    versions = {}
    for dist in ("vllm-cpu", "vllm", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    files = model_fingerprint(Path(model)) if os.path.isdir(model) else None
    return cache_key({"argv": args, "versions": versions, "cpu": cpu_kind(),
                      "kernel_env": kernel_environment(env), "model_files": files})


def prepared_entry(root: Path, launch: str) -> Path | None:
    """A complete entry written by a launch with this launch key, or None."""
    for marker_path in sorted(root.glob(f"*/{MARKER}")):
        directory = marker_path.parent
        if directory.name.startswith(TEMP_PREFIX):
            continue
        try:
            marker = json.loads(marker_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        label = directory.name[: -(len(marker.get("key", "")[:24]) + 1)]
        if launch in (marker.get("launches") or []) and find_entry(root, label, marker["key"]):
            return directory
    return None


def add_launch(directory: Path, launch: str | None) -> None:
    """Record that another launch (other arguments, same state) uses this entry, so that its
    `--prepare` finds it too. The marker is replaced by rename, never rewritten in place."""
    if not launch:
        return
    marker_path = directory / MARKER
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        if launch in marker.get("launches", []):
            return
        marker["launches"] = [*marker.get("launches", []), launch]
        temp = directory / f"{TEMP_PREFIX}{MARKER}-{uuid.uuid4().hex[:8]}"
        temp.write_text(json.dumps(marker, indent=2, default=str) + "\n", encoding="utf-8")
        _fsync(temp)
        os.replace(temp, marker_path)
    except (OSError, ValueError) as error:  # a read-only volume: the entry still serves
        log.warning("warm-start entry %s: launch not recorded (%s)", directory, error)


def plugin_installed() -> bool:
    """Whether vLLM will find the loader: the entry point is in the installed metadata (an
    editable install made before the entry point was added lacks it until reinstalled)."""
    return any(ep.name == PLUGIN_NAME for ep in metadata.entry_points(group=PLUGIN_GROUP))


def server_args(extra_args: list[str]) -> list[str]:
    """The --load-format argument that turns warm starts on, unless EXTRA_ARGS picks a loader
    itself (then the user's choice stands, and no entry is read or written)."""
    if any(a == "--load-format" or a.startswith("--load-format=") for a in extra_args):
        return []
    if not plugin_installed():
        log.warning("warm starts off: the %s vLLM plugin is not installed (pip install -e . "
                    "or rebuild the image)", PLUGIN_NAME)
        return []
    return ["--load-format", LOAD_FORMAT]
