"""`devloop model-cache`: backup and restore of the model cache, on a local directory standing in
for the volume's contents (a Hugging Face cache layout, symlinks included)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devloop.common.errors import DevloopError
from devloop.ops import modelcache
from devloop.ops.modelcache import archive


def _make_cache(root: Path) -> dict[str, bytes]:
    """A small Hugging Face-style cache: blobs, snapshot symlinks to them, a generated model."""
    files = {
        "huggingface/hub/models--o--m/blobs/aaa": os.urandom(300_000),
        "huggingface/hub/models--o--m/blobs/bbb": b'{"model_type": "qwen3"}\n',
        "huggingface/hub/models--o--m/refs/main": b"0123abcd",
        "tiny/config.json": b"{}",
        "tiny/model.safetensors": os.urandom(2 * modelcache.CHUNK + 17),  # several chunks
        "empty": b"",
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    snapshot = root / "huggingface/hub/models--o--m/snapshots/0123abcd"
    snapshot.mkdir(parents=True)
    os.symlink("../../blobs/aaa", snapshot / "model.safetensors")
    os.symlink("../../blobs/bbb", snapshot / "config.json")
    return files


def _tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry below root: ('file', sha256) or ('link', target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    root = tmp_path / "volume"
    _make_cache(root)
    return root


class _Interrupted(Exception):
    pass


class _CountingSource:
    """The real LocalSource, recording which files it opens and optionally failing after N, as
    a killed `kubectl exec` or a Ctrl-C would."""

    def __init__(self, root: Path, fail_after: int | None = None) -> None:
        self.inner = modelcache.LocalSource(root)
        self.description = self.inner.description
        self.fail_after = fail_after
        self.opened: list[str] = []

    def entries(self):
        return self.inner.entries()

    def open(self, path: str):
        if self.fail_after is not None and len(self.opened) >= self.fail_after:
            raise _Interrupted(path)
        self.opened.append(path)
        return self.inner.open(path)


def test_backup_then_restore_gives_an_identical_tree(volume, tmp_path):
    result = modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup")
    assert (result.files, result.links, result.copied, result.skipped) == (6, 2, 6, 0)
    assert modelcache.verify(tmp_path / "backup") == []
    count = modelcache.restore_to_dir(tmp_path / "backup", tmp_path / "restored")
    assert count == 6
    assert _tree(tmp_path / "restored") == _tree(volume)
    assert (tmp_path / "restored/huggingface/hub/models--o--m/snapshots/0123abcd/config.json"
            ).read_bytes() == b'{"model_type": "qwen3"}\n'  # the symlink resolves


def test_the_sha256_manifest_checks_with_sha256sum(volume, tmp_path):
    modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup")
    checked = subprocess.run(
        ["sha256sum", "-c", "--quiet", "../" + modelcache.MANIFEST_SHA256],
        cwd=tmp_path / "backup" / modelcache.DATA_DIR, capture_output=True, text=True, check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_corrupted_byte_is_detected_and_nothing_is_restored(volume, tmp_path):
    modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup")
    blob = tmp_path / "backup" / modelcache.DATA_DIR / "tiny/model.safetensors"
    content = bytearray(blob.read_bytes())
    content[1234] ^= 0x01
    blob.write_bytes(bytes(content))
    assert modelcache.verify(tmp_path / "backup") == [
        "tiny/model.safetensors: sha256 mismatch (the file is corrupt)"
    ]
    with pytest.raises(DevloopError, match="failed verification, nothing was restored"):
        modelcache.restore_to_dir(tmp_path / "backup", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_an_interrupted_backup_resumes_without_copying_finished_files_again(volume, tmp_path):
    first = _CountingSource(volume, fail_after=3)
    with pytest.raises(_Interrupted):
        modelcache.backup(first, tmp_path / "backup")
    assert not (tmp_path / "backup").exists()  # only the .partial staging directory
    assert (tmp_path / ("backup" + modelcache.PARTIAL_SUFFIX)).is_dir()
    with pytest.raises(DevloopError, match="unfinished backup"):
        modelcache.verify(tmp_path / "backup")

    second = _CountingSource(volume)
    result = modelcache.backup(second, tmp_path / "backup")
    assert len(first.opened) == 3
    assert set(second.opened).isdisjoint(first.opened)
    assert len(second.opened) == 3 and (result.copied, result.skipped) == (3, 3)
    assert modelcache.verify(tmp_path / "backup") == []
    modelcache.restore_to_dir(tmp_path / "backup", tmp_path / "restored")
    assert _tree(tmp_path / "restored") == _tree(volume)


def test_a_backup_killed_mid_file_redoes_that_file(volume, tmp_path, monkeypatch):
    real_copy = archive.copy_hashed
    calls = []

    def copy_then_die(source, target):
        calls.append(target)
        if len(calls) == 2:  # half a file written, then the process dies
            target.write_bytes(source.read(1000))
            source.close()
            raise _Interrupted(str(target))
        return real_copy(source, target)

    monkeypatch.setattr(archive, "copy_hashed", copy_then_die)
    with pytest.raises(_Interrupted):
        modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup")
    monkeypatch.setattr(archive, "copy_hashed", real_copy)
    second = _CountingSource(volume)
    modelcache.backup(second, tmp_path / "backup")
    assert len(second.opened) == 5  # six files, one finished before the kill
    assert modelcache.verify(tmp_path / "backup") == []


def test_a_file_changed_at_the_source_since_the_interruption_is_copied_again(volume, tmp_path):
    with pytest.raises(_Interrupted):
        modelcache.backup(_CountingSource(volume, fail_after=5), tmp_path / "backup")
    changed = volume / "empty"  # the first file in order, finished by the first run
    changed.write_bytes(b"now it has content")
    second = _CountingSource(volume)
    modelcache.backup(second, tmp_path / "backup")
    assert second.opened == ["empty", "tiny/model.safetensors"]  # changed, and never copied
    modelcache.restore_to_dir(tmp_path / "backup", tmp_path / "restored")
    assert (tmp_path / "restored/empty").read_bytes() == b"now it has content"


def test_an_existing_backup_is_not_replaced_without_force(volume, tmp_path):
    modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup")
    before = _tree(tmp_path / "backup")
    (volume / "new-file").write_bytes(b"x")
    with pytest.raises(DevloopError, match="exists: .*--force"):
        modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup")
    assert _tree(tmp_path / "backup") == before
    modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup", force=True)
    replaced = modelcache.load_manifest(tmp_path / "backup")["files"]
    assert "new-file" in [item["path"] for item in replaced]


def test_a_non_empty_target_is_not_overwritten_without_force(volume, tmp_path):
    modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup")
    target = tmp_path / "target"
    (target / "tiny").mkdir(parents=True)
    (target / "tiny/config.json").write_bytes(b"keep me")
    with pytest.raises(DevloopError, match="not empty: pass --force"):
        modelcache.restore_to_dir(tmp_path / "backup", target)
    assert (target / "tiny/config.json").read_bytes() == b"keep me"
    modelcache.restore_to_dir(tmp_path / "backup", target, force=True)
    assert (target / "tiny/config.json").read_bytes() == b"{}"


def test_a_manifest_naming_a_path_outside_the_target_is_refused(volume, tmp_path):
    modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup")
    manifest_path = tmp_path / "backup" / modelcache.MANIFEST_JSON
    manifest_path.write_text(manifest_path.read_text().replace('"empty"', '"../../evil"'))
    with pytest.raises(DevloopError, match="unsafe path '../../evil'"):
        modelcache.restore_to_dir(tmp_path / "backup", tmp_path / "restored")
    assert not (tmp_path / "evil").exists()


def _devloop(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devloop", "model-cache", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)


def test_the_cli_backs_up_verifies_and_refuses_without_force(volume, tmp_path):
    backup_dir = str(tmp_path / "backup")
    made = _devloop("backup", backup_dir, "--from-dir", str(volume))
    assert made.returncode == 0, made.stderr
    assert "backed up 6 files" in made.stdout and "2 symlinks" in made.stdout
    again = _devloop("backup", backup_dir, "--from-dir", str(volume))
    assert again.returncode == 1 and "--force" in again.stderr
    checked = _devloop("verify", backup_dir)
    assert checked.returncode == 0 and checked.stdout.startswith("ok:")
    restored = _devloop("restore", backup_dir, "--to-dir", str(tmp_path / "out"))
    assert restored.returncode == 0, restored.stderr
    refused = _devloop("restore", backup_dir, "--to-dir", str(tmp_path / "out"))
    assert refused.returncode == 1 and "not empty" in refused.stderr


# A stand-in for kubectl: `exec [-i] -n NS POD -c C -- CMD...` runs CMD here, and `get pods`
# names one pod. The pod's /models is a local directory, so the real streaming code (cat, the
# listing script, tar and sha256sum -c) runs end to end; only the cluster is missing.
_FAKE_KUBECTL = """#!/bin/sh
case "$*" in
  *" get pods "*) printf 'llm-engine-abc' ;;
  *) while [ "$1" != "--" ]; do shift; done; shift; exec "$@" ;;
esac
"""


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> str:
    path = tmp_path / "kubectl"
    path.write_text(_FAKE_KUBECTL)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_pod_backup_and_restore_go_through_kubectl_exec(volume, tmp_path, fake_kubectl):
    source_pod = modelcache.Pod(path=str(volume), kubectl=fake_kubectl)
    result = modelcache.backup(modelcache.PodSource(source_pod), tmp_path / "backup")
    assert source_pod.name == "llm-engine-abc"
    assert (result.files, result.links) == (6, 2)
    fresh = tmp_path / "fresh-volume"
    fresh.mkdir()
    target_pod = modelcache.Pod(path=str(fresh), kubectl=fake_kubectl)
    assert modelcache.restore_to_pod(tmp_path / "backup", target_pod) == 6
    assert _tree(fresh) == _tree(volume)
    with pytest.raises(DevloopError, match="not empty: pass --force"):
        modelcache.restore_to_pod(tmp_path / "backup", target_pod)


def test_pod_restore_fails_when_the_files_in_the_pod_do_not_match(volume, tmp_path, fake_kubectl):
    modelcache.backup(modelcache.LocalSource(volume), tmp_path / "backup")
    sums = tmp_path / "backup" / modelcache.MANIFEST_SHA256
    # A manifest line the pod's files cannot satisfy: sha256sum -c in the pod must catch it.
    sums.write_text(sums.read_text() + f"{'0' * 64}  tiny/config.json\n")
    fresh = tmp_path / "fresh-volume"
    fresh.mkdir()
    with pytest.raises(DevloopError, match="sha256sum -c"):
        modelcache.restore_to_pod(tmp_path / "backup", modelcache.Pod(path=str(fresh),
                                                                       kubectl=fake_kubectl))
