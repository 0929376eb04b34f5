"""`devloop serve` for an overlay whose engine is llama.cpp: the pod's settings, run here.

The overlay's rendered llm-llamacpp-config is the environment of a local `llama-server` (found by
binary.find_server: brew's, PATH's, or scripts/setup-llamacpp.sh's), as the pod's is, with what
must differ on a laptop: paths on the pod's /models volume move under the local cache directory,
the server listens on 127.0.0.1, and `--model tiny` serves the offline tiny GGUF instead of the
overlay's download (nothing is fetched). The settings are checked first (settings.check), and
the AMX choice the pod's shell makes is made here too (amx.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from devloop.engine.llamacpp import amx, binary, gguf
from devloop.engine.llamacpp import settings as llama_settings
from devloop.manifests import kustomize

log = logging.getLogger("devloop.serve")

CONFIGMAP = "llm-llamacpp-config"
POD_MODEL_VOLUME = "/models"


def overlay_settings(overlay: str) -> dict[str, str] | None:
    """The overlay's llama.cpp ConfigMap data, or None when its engine is not llama.cpp."""
    objects = kustomize.load_objects(kustomize.render_overlay(overlay))
    names = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "ConfigMap"}
    if not any(name.startswith(CONFIGMAP) for name in names):
        return None
    configmap = kustomize.find_object(objects, "ConfigMap", CONFIGMAP)
    return {key: str(value) for key, value in (configmap.get("data") or {}).items()}


def local_environment(
    settings: Mapping[str, str],
    cache_dir: Path,
    model: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """llama-server's environment for a local run of `settings` (an overlay's ConfigMap data);
    raises llama_settings.ConfigError listing every invalid key or value."""
    env = dict(settings)
    if model is not None:
        for key in llama_settings.MODEL_KEYS:
            env.pop(key, None)
        env["LLAMA_ARG_MODEL"] = model
        env["LLAMA_ARG_ALIAS"] = model  # the overlay's alias belongs to its own model
    if port is not None:
        env["LLAMA_ARG_PORT"] = str(port)
    env["LLAMA_ARG_HOST"] = host
    env.update(overrides or {})
    for key, value in env.items():
        if value == POD_MODEL_VOLUME or value.startswith(POD_MODEL_VOLUME + "/"):
            env[key] = str(cache_dir / value[len(POD_MODEL_VOLUME):].lstrip("/"))
    llama_settings.check(env)  # `tiny` passes here; it becomes a file below
    if env.get("LLAMA_ARG_MODEL") == llama_settings.TINY_MODEL:
        env["LLAMA_ARG_MODEL"] = str(gguf.tiny_gguf())
        # Served as `tiny`, unless asked for another name (`--set LLAMA_ARG_ALIAS=tiny-gguf`
        # beside a vLLM server that serves `tiny` behind the same gateway).
        if "LLAMA_ARG_ALIAS" not in (overrides or {}):
            env["LLAMA_ARG_ALIAS"] = llama_settings.TINY_MODEL
    reason = amx.repack_off_reason(env)
    if reason:
        log.info("%s", reason)
        env["LLAMA_ARG_REPACK"] = "false"
    return env


def start_server(env: Mapping[str, str], log_path: Path,
                 preexec: Callable[[], None] | None = None) -> subprocess.Popen:
    """llama-server with `env` as its only LLAMA_* settings (none inherited from this shell:
    what runs is what the overlay says), in its own session, output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    inherited = {key: value for key, value in os.environ.items()
                 if not key.startswith("LLAMA_")}
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [str(binary.find_server())],
            env={**inherited, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 - one system call (serve.stop_with_parent)
        )
