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

Where things are: sources.py (a local directory or the engine pod, read file by file),
archive.py (writing a backup: the resumable copy and its manifests), restore.py (verify and
restore), command.py (the CLI).
"""

from devloop.ops.modelcache.archive import (
    CHUNK,
    DATA_DIR,
    MANIFEST_JSON,
    MANIFEST_SHA256,
    PARTIAL_SUFFIX,
    BackupResult,
    backup,
    load_manifest,
)
from devloop.ops.modelcache.restore import restore_to_dir, restore_to_pod, verify
from devloop.ops.modelcache.sources import Entry, LocalSource, Pod, PodSource, safe_relative

__all__ = [
    "CHUNK", "DATA_DIR", "MANIFEST_JSON", "MANIFEST_SHA256", "PARTIAL_SUFFIX", "BackupResult",
    "Entry", "LocalSource", "Pod", "PodSource", "backup", "load_manifest", "restore_to_dir",
    "restore_to_pod", "safe_relative", "verify",
]
