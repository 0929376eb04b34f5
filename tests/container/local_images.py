"""The images the container tests need besides the one under test, made on this machine.

No registry can be reached here, so `docker.io/vllm/vllm-openai-cpu:<release>` (the multi-arch
tag image/Dockerfile names) and its `-x86_64` tag are built from
images/vllm-openai-cpu.Containerfile, and a Redis image from images/redis.Containerfile, both on a
Debian root filesystem that debootstrap makes and `podman import` turns into an image. They live
in podman's storage, so a machine builds them once (about 10 minutes) and every later test run
reuses them; a machine-wide lock keeps concurrent runs (other engineers' on a shared machine)
from building them twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import hostpip, podman

ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = Path(__file__).parent / "images"
BASE_CONTAINERFILE = IMAGES_DIR / "vllm-openai-cpu.Containerfile"
REDIS_CONTAINERFILE = IMAGES_DIR / "redis.Containerfile"
REDIS_IMAGE = "localhost/devloop-test-redis:bookworm"
ROOTFS_IMAGE = "localhost/devloop-debian-rootfs:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEVLOOP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the stand-in needs from Debian: Python for the venv, the tcmalloc the official image
# preloads, libnuma for vLLM's CPU kernels, CA certificates as the official image has them.
ROOTFS_PACKAGES = ["python3", "python3-venv", "libtcmalloc-minimal4", "libnuma1", "ca-certificates"]
LOCK_PATH = Path(tempfile.gettempdir()) / "devloop-container-base.lock"
# Each stand-in carries the hash of the Containerfile it was built from: an edited file rebuilds.
SOURCE_LABEL = "dev.devloop.test.containerfile-sha256"


def vllm_release() -> str:
    """The vLLM version scripts/bootstrap.sh installs, which image/Dockerfile must use too."""
    text = (ROOT / "scripts" / "bootstrap.sh").read_text()
    return re.search(r"^VLLM_VERSION=(\S+)", text, re.MULTILINE).group(1)


def base_refs() -> tuple[str, str]:
    """(the multi-arch tag image/Dockerfile names, the official x86-64 tag)."""
    release = vllm_release()
    return (f"docker.io/vllm/vllm-openai-cpu:v{release}",
            f"docker.io/vllm/vllm-openai-cpu:v{release}-x86_64")


def _make_rootfs_image() -> None:
    if shutil.which("debootstrap") is None:
        raise podman.PodmanError("debootstrap is not installed: `apt-get install debootstrap` "
                                 "(.ci/container-engine.sh does) to make the base image here")
    with tempfile.TemporaryDirectory(prefix="devloop-rootfs-") as workdir:
        target = Path(workdir) / DEBIAN_SUITE
        debootstrap = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=" + ",".join(ROOTFS_PACKAGES),
             DEBIAN_SUITE, str(target), DEBIAN_MIRROR],
            check=False, capture_output=True, text=True, timeout=1800,
        )
        if debootstrap.returncode != 0:
            tail = "\n".join((debootstrap.stdout + debootstrap.stderr).splitlines()[-15:])
            raise podman.PodmanError(f"debootstrap {DEBIAN_SUITE} from {DEBIAN_MIRROR} failed "
                                     f"(set DEVLOOP_DEBIAN_MIRROR for another mirror):\n{tail}")
        tar = subprocess.run(["tar", "-C", str(target), "-c", "."], check=True,
                             capture_output=True, timeout=600)
        podman.run(["import", "--change", 'CMD ["/bin/bash"]', "-", ROOTFS_IMAGE],
                   input_bytes=tar.stdout)


def _source_hash(containerfile: Path) -> str:
    return hashlib.sha256(containerfile.read_bytes()).hexdigest()


def _is_current(ref: str, containerfile: Path) -> bool:
    if not podman.image_exists(ref):
        return False
    labels = podman.inspect(ref)["Config"].get("Labels") or {}
    return labels.get(SOURCE_LABEL) == _source_hash(containerfile)


def _build(containerfile: Path, ref: str, context: Path, *extra: str) -> None:
    podman.run(["build", *extra, "--build-arg", f"ROOTFS={ROOTFS_IMAGE}",
                "--label", f"{SOURCE_LABEL}={_source_hash(containerfile)}",
                "-f", str(containerfile), "-t", ref, str(context)], timeout=3600)


def ensure_images() -> tuple[str, str]:
    """(the base image's reference, the Redis image's), each built first if missing."""
    multi_arch, x86_64 = base_refs()
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base_current = _is_current(multi_arch, BASE_CONTAINERFILE)
        redis_current = _is_current(REDIS_IMAGE, REDIS_CONTAINERFILE)
        if not (base_current and redis_current) and not podman.image_exists(ROOTFS_IMAGE):
            _make_rootfs_image()
        if not base_current:
            _build(BASE_CONTAINERFILE, x86_64, ROOT / "scripts", *hostpip.build_volumes(),
                   "--build-arg", f"VLLM_VERSION={vllm_release()}")
            # The official multi-arch tag resolves to the -x86_64 image on this host.
            podman.run(["tag", x86_64, multi_arch])
        if not redis_current:
            _build(REDIS_CONTAINERFILE, REDIS_IMAGE, IMAGES_DIR)
    return multi_arch, REDIS_IMAGE


def probe_runtime(image: str) -> str | None:
    """Why podman cannot run a container here, or None when it can (one trivial run)."""
    result = podman.run(["run", "--rm", "--network=none", "--entrypoint=true", image],
                        check=False, timeout=300)
    if result.returncode == 0:
        return None
    return result.output.strip().splitlines()[-1] if result.output.strip() else "no output"
