"""The host's pip configuration, lent to a `RUN pip install` step of a container build.

Behind a TLS-intercepting proxy pip inside a build fails unless it trusts the host's CA bundle,
and a machine may keep wheels or indexes on local disk (the CPU torch, for one). pip reads its
configuration files; this lists `podman build --volume` mounts for those files, the CA bundle and
every local path they name, read-only. Mounts exist only while a RUN step runs: nothing of the
host is baked into a layer, and a build that needs no network needs none of them.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from urllib.parse import urlparse

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# pip's own search order (pip config debug): global, then user; PIP_CONFIG_FILE last.
CONFIG_FILES = (
    Path("/etc/xdg/pip/pip.conf"),
    Path("/etc/pip.conf"),
    Path.home() / ".pip" / "pip.conf",
    Path.home() / ".config" / "pip" / "pip.conf",
)
# Settings whose values may name files or directories on this machine.
PATH_SETTINGS = ("cert", "client-cert", "constraint", "requirement", "find-links",
                 "index-url", "extra-index-url")


def _local_path(value: str) -> Path | None:
    parsed = urlparse(value)
    if parsed.scheme == "file":
        path = Path(parsed.path)
    elif value.startswith("/"):
        path = Path(value)
    else:
        return None
    # A local PEP 503 index (.../simple) links its files relative to itself (../../files/...).
    return path.parent if path.name == "simple" else path


def _named_paths(config: Path) -> list[Path]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config)
    found = []
    for section in parser.sections():
        for key in PATH_SETTINGS:
            for value in parser.get(section, key, fallback="").split():
                path = _local_path(value)
                if path is not None:
                    found.append(path)
    return found


def _env_paths() -> list[Path]:
    found = []
    for key in PATH_SETTINGS:
        for value in os.environ.get("PIP_" + key.upper().replace("-", "_"), "").split():
            path = _local_path(value)
            if path is not None:
                found.append(path)
    return found


def build_volumes() -> list[str]:
    """`--volume SRC:DST:ro` arguments for the host's pip setup, each existing path once.

    A user's config file is mounted where pip looks for it as root, the user in the build."""
    mounts: dict[str, str] = {}
    configs = [c for c in CONFIG_FILES if c.is_file()]
    extra = os.environ.get("PIP_CONFIG_FILE")
    if extra and Path(extra).is_file():
        configs.append(Path(extra))
    for config in configs:
        target = config
        if config.is_relative_to(Path.home()):
            target = Path("/root") / config.relative_to(Path.home())
        mounts[str(config)] = str(target)
        for path in _named_paths(config):
            if path.exists():
                mounts[str(path)] = str(path)
    for path in _env_paths() + [CA_BUNDLE]:
        if path.exists():
            mounts[str(path)] = str(path)
    return [f"--volume={source}:{target}:ro" for source, target in sorted(mounts.items())]
