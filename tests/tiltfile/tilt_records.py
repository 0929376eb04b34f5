"""What an evaluation of the Tiltfile records (tilt_api.py), as Tilt's own types: resources,
docker builds, live-update steps, port forwards; and the pure helpers over Kubernetes objects and
Starlark values that the builtins and the assembly share."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import starlark
import yaml

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
UNCATEGORIZED = "uncategorized"
LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


class TiltfileError(Exception):
    """What Tilt reports as a Tiltfile load error (an API misuse it detects)."""


class FailCalled(Exception):
    """The Tiltfile called fail(msg)."""


class TriggerMode(enum.Enum):
    AUTO = "TRIGGER_MODE_AUTO"
    MANUAL = "TRIGGER_MODE_MANUAL"


@dataclass(frozen=True)
class Blob:
    """Tilt's Blob: YAML content, as opposed to a string, which k8s_yaml reads as a file path."""

    text: str
    source: str = ""  # the kustomize directory it came from, if any


@dataclass(frozen=True)
class LiveUpdateStep:
    kind: str  # fall_back_on | sync | run | restart_container
    paths: tuple[str, ...] = ()  # fall_back_on files; sync (local, remote)
    cmd: Any = None
    trigger: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortForward:
    local_port: int
    container_port: int | None = None
    name: str | None = None
    link_path: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class Link:
    url: str
    name: str | None = None


@dataclass
class DockerBuild:
    ref: str
    context: Path
    dockerfile: Path
    live_update: list[LiveUpdateStep]
    only: list[str]
    ignore: list[str]
    platform: str
    build_args: dict[str, str]
    kwargs: dict[str, Any]


@dataclass
class Resource:
    name: str
    kind: str  # k8s | local
    objects: list[dict] = field(default_factory=list)
    workload: dict | None = None
    images: list[str] = field(default_factory=list)
    port_forwards: list[PortForward] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    resource_deps: list[str] = field(default_factory=list)
    trigger_mode: TriggerMode = TriggerMode.AUTO
    auto_init: bool = True
    pod_readiness: str = ""
    cmd: Any = None
    deps: list[str] = field(default_factory=list)


@dataclass
class Recording:
    """Everything one evaluation registered."""

    k8s_yaml: list[Blob | str] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)
    docker_builds: list[DockerBuild] = field(default_factory=list)
    k8s_resource_calls: list[dict[str, Any]] = field(default_factory=list)
    local_resources: list[dict[str, Any]] = field(default_factory=list)
    allowed_contexts: list[str] = field(default_factory=list)
    config_definitions: dict[str, str] = field(default_factory=dict)
    config_usage: dict[str, str] = field(default_factory=dict)
    config_values: dict[str, Any] = field(default_factory=dict)
    watched: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    prints: list[str] = field(default_factory=list)
    version_constraint: str = ""
    failure: str | None = None


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _parse_tilt_args(args: list[str], definitions: dict[str, str]) -> dict[str, Any]:
    """`tilt up -- --overlay=optimized`: Go flag syntax, as Tilt's config.parse reads it."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            raise TiltfileError(f"positional args given but no setting defined with args=True: {arg}")
        name, sep, value = arg.lstrip("-").partition("=")
        if name not in definitions:
            raise TiltfileError(f"flag provided but not defined: -{name}")
        kind = definitions[name]
        if kind == "bool":
            values[name] = value.lower() in ("", "true", "1") if sep else True
        else:
            if not sep:
                i += 1
                value = args[i]
            values[name] = values.get(name, []) + [value] if kind == "string_list" else value
        i += 1
    return values



def _check_encodable(value: Any, path: str = "") -> None:
    """Tilt's encode_yaml/encode_json take "maps with string keys, lists, strings, ints, and
    bools" only (its API reference); anything else fails the load."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TiltfileError(f"encode_yaml_stream: non-string key {key!r} at {path or '.'}")
            _check_encodable(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_encodable(item, f"{path}[{index}]")
    elif not isinstance(value, (str, int, bool)) or isinstance(value, float):
        raise TiltfileError(f"encode_yaml_stream: cannot encode {value!r} at {path}")


def tilt_dialect() -> starlark.Dialect:
    dialect = starlark.Dialect.standard()
    dialect.enable_f_strings = False
    dialect.enable_types = starlark.DialectTypes.DISABLE
    return dialect


def _load_yaml_stream(text: str) -> list:
    return list(yaml.safe_load_all(text))


def _port_forward(value: Any) -> PortForward:
    """port_forwards accept 8000, '8000', '9000:8000', 'host:9000:8000' or port_forward()."""
    if isinstance(value, PortForward):
        return value
    if isinstance(value, int):
        return PortForward(value)
    parts = str(value).split(":")
    if len(parts) == 1:
        return PortForward(int(parts[0]))
    if len(parts) == 2:
        return PortForward(int(parts[0]), int(parts[1]))
    return PortForward(int(parts[1]), int(parts[2]), host=parts[0])


def _is_within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _namespace(obj: dict) -> str:
    return obj.get("metadata", {}).get("namespace", "default")


def image_name(ref: str) -> str:
    """Tilt matches images by name: vllm-devloop:dev and vllm-devloop@sha256:... are vllm-devloop."""
    name = ref.split("@")[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


def pod_spec(obj: dict) -> dict:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def pod_containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return spec.get("initContainers", []) + spec.get("containers", [])


def pod_labels(obj: dict | None) -> dict:
    if obj is None:
        return {}
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {}).get("metadata", {}).get("labels", {})


def selector_matches(selector: str, obj: dict) -> bool:
    """Tilt's object selector name[:kind[:namespace]], case-insensitive."""
    parts = [p.lower() for p in selector.split(":")]
    fields = [obj["metadata"]["name"], obj["kind"], obj["metadata"].get("namespace", "")]
    return all(part == value.lower() for part, value in zip(parts, fields, strict=False))  # a selector may omit kind, namespace
