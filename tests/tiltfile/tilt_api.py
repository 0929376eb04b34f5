"""Tilt's Tiltfile API as recording builtins, to evaluate the real Tiltfile without Tilt.

The interpreter is starlark-rust (PyPI `starlark-pyo3`). `starlark-go` wraps go.starlark.net, the
interpreter Tilt embeds, but it cannot pass Python objects into Starlark (no modules such as
`config.define_string`, no opaque values such as a `sync()` step), so it cannot express Tilt's API.
The dialect is the standard one with f-strings off: no top-level `if`/`for` and no `set`, which
is stricter than Tilt's (go.starlark.net with set and recursion on), so whatever evaluates here
also evaluates in Tilt.

Every builtin's Python signature copies the parameter names and defaults of Tilt's API reference
(https://docs.tilt.dev/api.html, generated from tilt-dev/tilt internal/tiltfile/api); a keyword
Tilt does not have fails the evaluation with TypeError, like Tilt's argument unpacking. After the
evaluation, `assemble()` groups the Kubernetes objects into resources the way Tilt does
(a resource per workload, Services attached to the workload their selector matches, objects
claimed by `k8s_resource(objects=...)`, the rest "uncategorized") and checks the cross-references
Tilt checks at load time.
"""

from __future__ import annotations

import enum
import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import starlark
import yaml

from devloop.manifests.kustomize import render as render_kustomization

from .fake_kubectl import FakeCluster, KubectlFailed

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


class TiltEnvironment:
    """One evaluation of a Tiltfile, as `tilt <subcommand> -- <args>` in kube context `context`.

    `tilt_config` stands for the contents of tilt_config.json next to the Tiltfile (None: no
    file); it is passed in rather than read so that tests never write into the checkout.
    `cluster` answers the Tiltfile's `local('kubectl ...')` (fake_kubectl.py); other commands
    fail the evaluation."""

    def __init__(
        self,
        tiltfile: Path,
        *,
        context: str = "kind-kind",
        args: list[str] | None = None,
        tilt_config: dict[str, Any] | None = None,
        subcommand: str = "up",
        environ: dict[str, str] | None = None,
        cluster: FakeCluster | None = None,
    ) -> None:
        self.tiltfile = tiltfile.resolve()
        self.root = self.tiltfile.parent
        self.context = context
        self.args = args or []
        self.tilt_config = tilt_config
        self.subcommand = subcommand
        self.environ = dict(os.environ if environ is None else environ)
        # What `local('kubectl ...')` reaches: by default a bare cluster (no CRDs) of `context`.
        self.cluster = cluster if cluster is not None else FakeCluster(context=context)
        self.rec = Recording()

    # -- paths -------------------------------------------------------------------------------

    def _abs(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(str(self.root), path))

    def _rel(self, path: str) -> str:
        return posixpath.relpath(self._abs(path), str(self.root))

    # -- builtins ----------------------------------------------------------------------------

    def _builtins(self) -> dict[str, Any]:
        rec = self.rec

        def fail(msg: Any) -> None:
            rec.failure = str(msg)
            raise FailCalled(str(msg))

        def warn(msg: str) -> None:
            rec.warnings.append(msg)

        def print_(*args: Any, sep: str = " ") -> None:
            rec.prints.append(sep.join(str(a) for a in args))

        def version_settings(check_updates: bool = True, constraint: str = "") -> None:
            rec.version_constraint = constraint

        def k8s_context() -> str:
            return self.context

        def allow_k8s_contexts(contexts: str | list[str]) -> None:
            rec.allowed_contexts += _as_list(contexts)

        def listdir(directory: str, recursive: bool = False) -> list[str]:
            base = Path(self._abs(directory))
            rec.watched.append(self._rel(directory))
            entries = base.rglob("*") if recursive else base.iterdir()
            return sorted(str(p) for p in entries if p.is_file())

        def read_file(file_path: str, default: str | None = None) -> Any:
            path = Path(self._abs(file_path))
            rec.watched.append(self._rel(file_path))
            if not path.exists() and default is not None:
                return starlark.OpaquePythonObject(Blob(default))
            return starlark.OpaquePythonObject(Blob(path.read_text(encoding="utf-8")))

        def watch_file(file_path: str) -> None:
            rec.watched.append(self._rel(file_path))

        def blob(contents: str) -> Any:
            return starlark.OpaquePythonObject(Blob(contents))

        def kustomize(pathToDir: str, kustomize_bin: str | None = None) -> Any:  # Tilt's parameter name
            # Tilt runs `kustomize build DIR` when a kustomize binary is on PATH, else
            # `kubectl kustomize DIR`; the project pins the latter (kubectl 1.37, kustomize v5.8).
            directory = Path(self._abs(pathToDir))
            rec.watched.append(self._rel(pathToDir))
            return starlark.OpaquePythonObject(
                Blob(render_kustomization(directory), source=self._rel(pathToDir))
            )

        def k8s_yaml(yaml: Any, allow_duplicates: bool = False) -> None:  # Tilt's parameter name
            for item in _as_list(yaml):
                if isinstance(item, Blob):
                    text = item.text
                elif isinstance(item, str):
                    text = Path(self._abs(item)).read_text(encoding="utf-8")
                    rec.watched.append(self._rel(item))
                else:
                    raise TiltfileError(f"k8s_yaml: want a path or a Blob, got {item!r}")
                rec.k8s_yaml.append(item)
                rec.objects += [doc for doc in _load_yaml_stream(text) if doc]

        def decode_yaml_stream(yaml: Any) -> list:  # Tilt's parameter name
            text = yaml.text if isinstance(yaml, Blob) else str(yaml)
            return json.loads(json.dumps(list(_load_yaml_stream(text))))

        def encode_yaml_stream(objs: list) -> Any:
            for obj in objs:
                _check_encodable(obj)
            return starlark.OpaquePythonObject(Blob(__import__("yaml").safe_dump_all(list(objs))))

        def local(
            command: str | list[str],
            quiet: bool = False,
            command_bat: str | list[str] = "",
            echo_off: bool = False,
            env: dict[str, str] = {},
            dir: str = "",  # Tilt's parameter name
            stdin: Any = None,
        ) -> Any:
            # A string runs through `sh -c`, which the stand-in cannot follow: only argv lists.
            if not isinstance(command, list):
                raise TiltfileError(f"local: the harness runs argv lists only, got {command!r}")
            try:
                out = self.cluster.run(list(command))
            except KubectlFailed as failed:
                # Tilt stops loading the Tiltfile when a local() command exits non-zero.
                raise TiltfileError(f"command {command!r} failed: exit status 1\n{failed}") from failed
            return starlark.OpaquePythonObject(Blob(out))

        def decode_yaml(yaml: Any) -> Any:  # Tilt's parameter name
            text = yaml.text if isinstance(yaml, Blob) else str(yaml)
            return json.loads(json.dumps(__import__("yaml").safe_load(text)))

        def fall_back_on(files: str | list[str]) -> Any:
            return starlark.OpaquePythonObject(
                LiveUpdateStep("fall_back_on", tuple(_as_list(files)))
            )

        def sync(local_path: str, remote_path: str) -> Any:
            return starlark.OpaquePythonObject(LiveUpdateStep("sync", (local_path, remote_path)))

        def run(cmd: str | list[str], trigger: str | list[str] = []) -> Any:
            return starlark.OpaquePythonObject(
                LiveUpdateStep("run", cmd=cmd, trigger=tuple(_as_list(trigger)))
            )

        def restart_container() -> Any:
            return starlark.OpaquePythonObject(LiveUpdateStep("restart_container"))

        def docker_build(
            ref: str,
            context: str,
            build_args: dict[str, str] = {},
            dockerfile: str = "Dockerfile",
            dockerfile_contents: Any = "",
            live_update: list = [],
            match_in_env_vars: bool = False,
            ignore: str | list[str] = [],
            only: str | list[str] = [],
            entrypoint: str | list[str] = [],
            target: str = "",
            ssh: str | list[str] = "",
            network: str = "",
            secret: str | list[str] = "",
            extra_tag: str | list[str] = "",
            container_args: list[str] | None = None,
            cache_from: str | list[str] = [],
            pull: bool = False,
            platform: str = "",
        ) -> None:
            if dockerfile_contents and dockerfile != "Dockerfile":
                raise TiltfileError("docker_build: cannot set both dockerfile and dockerfile_contents")
            context_dir = Path(self._abs(context))
            steps = list(live_update)
            self._check_live_update(ref, context_dir, steps)
            rec.docker_builds.append(
                DockerBuild(
                    ref=ref,
                    context=context_dir,
                    # Tilt resolves dockerfile relative to the Tiltfile, not to the context.
                    dockerfile=Path(self._abs(dockerfile)),
                    live_update=steps,
                    only=_as_list(only),
                    ignore=_as_list(ignore),
                    platform=platform,
                    build_args=dict(build_args),
                    kwargs={"entrypoint": entrypoint, "target": target, "container_args": container_args},
                )
            )

        def port_forward(
            local_port: int,
            container_port: int | None = None,
            name: str | None = None,
            link_path: str | None = None,
            host: str | None = None,
        ) -> Any:
            return starlark.OpaquePythonObject(
                PortForward(local_port, container_port, name, link_path, host)
            )

        def link(url: str, name: str | None = None) -> Any:
            return starlark.OpaquePythonObject(Link(url, name))

        def k8s_resource(
            workload: str = "",
            new_name: str = "",
            port_forwards: Any = [],
            extra_pod_selectors: Any = [],
            trigger_mode: TriggerMode = TriggerMode.AUTO,
            resource_deps: list[str] = [],
            objects: list[str] = [],
            auto_init: bool = True,
            pod_readiness: str = "",
            links: Any = [],
            labels: str | list[str] = [],
            discovery_strategy: str = "",
        ) -> None:
            if not workload and not (new_name and objects):
                raise TiltfileError("k8s_resource: give a workload, or new_name and objects")
            if pod_readiness not in ("", "wait", "ignore"):
                raise TiltfileError(f"k8s_resource: pod_readiness must be wait or ignore: {pod_readiness}")
            if not isinstance(trigger_mode, TriggerMode):
                raise TiltfileError(f"k8s_resource: trigger_mode must be a TRIGGER_MODE_*: {trigger_mode!r}")
            rec.k8s_resource_calls.append(
                {
                    "workload": workload,
                    "new_name": new_name,
                    "port_forwards": [_port_forward(p) for p in _as_list(port_forwards)],
                    "trigger_mode": trigger_mode,
                    "resource_deps": list(resource_deps),
                    "objects": list(objects),
                    "auto_init": auto_init,
                    "pod_readiness": pod_readiness,
                    "links": [lk if isinstance(lk, Link) else Link(lk) for lk in _as_list(links)],
                    "labels": _as_list(labels),
                }
            )

        def local_resource(
            name: str,
            cmd: str | list[str],
            deps: str | list[str] | None = None,
            trigger_mode: TriggerMode = TriggerMode.AUTO,
            resource_deps: list[str] = [],
            ignore: str | list[str] = [],
            auto_init: bool = True,
            serve_cmd: str | list[str] = "",
            cmd_bat: str | list[str] = "",
            serve_cmd_bat: str | list[str] = "",
            allow_parallel: bool = False,
            links: Any = [],
            tags: list[str] = [],
            env: dict[str, str] = {},
            serve_env: dict[str, str] = {},
            readiness_probe: Any = None,
            dir: str = "",  # Tilt's parameter name
            serve_dir: str = "",
            labels: str | list[str] = [],
        ) -> None:
            if not isinstance(trigger_mode, TriggerMode):
                raise TiltfileError(f"local_resource: trigger_mode must be a TRIGGER_MODE_*: {trigger_mode!r}")
            rec.local_resources.append(
                {
                    "name": name,
                    "cmd": cmd,
                    "deps": _as_list(deps),
                    "trigger_mode": trigger_mode,
                    "resource_deps": list(resource_deps),
                    "auto_init": auto_init,
                    "serve_cmd": serve_cmd,
                    "dir": dir,
                    "labels": _as_list(labels),
                    "env": dict(env),
                }
            )

        def update_settings(
            max_parallel_updates: int = 3,
            k8s_upsert_timeout_secs: int = 30,
            suppress_unused_image_warnings: Any = None,
        ) -> None:
            pass

        # config.*
        def define_string(name: str, args: bool = False, usage: str = "") -> None:
            rec.config_definitions[name] = "string"
            rec.config_usage[name] = usage

        def define_string_list(name: str, args: bool = False, usage: str = "") -> None:
            rec.config_definitions[name] = "string_list"
            rec.config_usage[name] = usage

        def define_bool(name: str, args: bool = False, usage: str = "") -> None:
            rec.config_definitions[name] = "bool"
            rec.config_usage[name] = usage

        def parse() -> dict[str, Any]:
            values: dict[str, Any] = {}
            for name, value in (self.tilt_config or {}).items():
                if name not in rec.config_definitions:
                    raise TiltfileError(f"tilt_config.json: unknown setting {name!r}")
                values[name] = value
            values.update(_parse_tilt_args(self.args, rec.config_definitions))
            rec.config_values = values
            return values

        def set_enabled_resources(resources: list[str]) -> None:
            pass

        # os.* and os.path.*
        def getcwd() -> str:
            return str(self.root)

        def getenv(key: str, default: Any = None) -> Any:
            return self.environ.get(key, default)

        def exists(path: str) -> bool:
            return Path(self._abs(path)).exists()

        def join(path: str, *paths: str) -> str:
            return posixpath.join(path, *paths)

        def abspath(path: str) -> str:
            return self._abs(path)

        def relpath(targpath: str, basepath: str = "") -> str:
            return posixpath.relpath(self._abs(targpath), self._abs(basepath or "."))

        def basename(path: str) -> str:
            return posixpath.basename(path)

        def dirname(path: str) -> str:
            return posixpath.dirname(path)

        def realpath(path: str) -> str:
            return os.path.realpath(self._abs(path))

        return {
            "fail": fail, "warn": warn, "print": print_, "version_settings": version_settings,
            "k8s_context": k8s_context, "allow_k8s_contexts": allow_k8s_contexts, "listdir": listdir,
            "read_file": read_file, "watch_file": watch_file, "blob": blob, "kustomize": kustomize,
            "k8s_yaml": k8s_yaml, "decode_yaml_stream": decode_yaml_stream, "decode_yaml": decode_yaml,
            "encode_yaml_stream": encode_yaml_stream, "local": local,
            "fall_back_on": fall_back_on, "sync": sync, "run": run, "restart_container": restart_container,
            "docker_build": docker_build, "port_forward": port_forward, "link": link,
            "k8s_resource": k8s_resource, "local_resource": local_resource,
            "update_settings": update_settings,
            "_config_define_string": define_string, "_config_define_string_list": define_string_list,
            "_config_define_bool": define_bool, "_config_parse": parse,
            "_config_set_enabled_resources": set_enabled_resources,
            "_os_getcwd": getcwd, "_os_getenv": getenv, "_os_path_exists": exists, "_os_path_join": join,
            "_os_path_abspath": abspath, "_os_path_relpath": relpath, "_os_path_basename": basename,
            "_os_path_dirname": dirname, "_os_path_realpath": realpath,
        }

    def _check_live_update(self, ref: str, context_dir: Path, steps: list) -> None:
        """The rules Tilt enforces when it loads live_update steps."""
        order = {"fall_back_on": 0, "sync": 1, "run": 2, "restart_container": 3}
        kinds = []
        for step in steps:
            if not isinstance(step, LiveUpdateStep):
                raise TiltfileError(f"docker_build({ref}): live_update holds a non-step {step!r}")
            kinds.append(step.kind)
        if [order[k] for k in kinds] != sorted(order[k] for k in kinds):
            raise TiltfileError(
                f"docker_build({ref}): live_update steps out of order {kinds}: "
                "fall_back_on first, then sync, then run"
            )
        for step in steps:
            if step.kind == "sync":
                local, remote = step.paths
                if not _is_within(Path(self._abs(local)), context_dir):
                    raise TiltfileError(
                        f"sync step source {local!r} is not inside the docker_build context {context_dir}"
                    )
                if not remote.startswith("/"):
                    raise TiltfileError(f"sync step destination {remote!r} is not absolute")
            if step.kind == "fall_back_on":
                for path in step.paths:
                    if not _is_within(Path(self._abs(path)), context_dir):
                        raise TiltfileError(
                            f"fall_back_on path {path!r} is outside the docker_build context"
                        )
            if step.kind == "restart_container":
                raise TiltfileError("restart_container() is for Docker Compose only, not Kubernetes")

    # -- evaluation --------------------------------------------------------------------------

    def run(self) -> Recording:
        """Evaluate the Tiltfile. fail() is recorded in `.failure`; any other error raises."""
        module = starlark.Module()
        for name, function in self._builtins().items():
            module.add_callable(name, function)
        module["TRIGGER_MODE_AUTO"] = starlark.OpaquePythonObject(TriggerMode.AUTO)
        module["TRIGGER_MODE_MANUAL"] = starlark.OpaquePythonObject(TriggerMode.MANUAL)
        module["_environ"] = self.environ
        module["_subcommand"] = self.subcommand
        module["_main_path"] = str(self.tiltfile)
        module["_main_dir"] = str(self.root)
        module.add_callable("_is_blob", lambda value: isinstance(value, Blob))
        module.add_callable("_blob_text", lambda value: value.text)
        globals_ = starlark.Globals.extended_by([starlark.LibraryExtension.StructType])
        # Tilt's str() of a Blob is its text (`str(local(...))`); an opaque Python object would
        # print as "<opaque python object>". The builtin is kept in its own evaluation first:
        # within one module a global `str` would shadow it everywhere.
        starlark.eval(module, starlark.parse("<tilt str>", "_builtin_str = str", tilt_dialect()),
                      globals_)
        prelude = """
def str(value):
    return _blob_text(value) if _is_blob(value) else _builtin_str(value)

config = struct(
    define_string = _config_define_string,
    define_string_list = _config_define_string_list,
    define_bool = _config_define_bool,
    parse = _config_parse,
    set_enabled_resources = _config_set_enabled_resources,
    tilt_subcommand = _subcommand,
    main_path = _main_path,
    main_dir = _main_dir,
)
os = struct(
    name = "posix",
    environ = _environ,
    getcwd = _os_getcwd,
    getenv = _os_getenv,
    path = struct(
        exists = _os_path_exists,
        join = _os_path_join,
        abspath = _os_path_abspath,
        relpath = _os_path_relpath,
        basename = _os_path_basename,
        dirname = _os_path_dirname,
        realpath = _os_path_realpath,
    ),
)
"""
        starlark.eval(module, starlark.parse("<tilt builtins>", prelude, tilt_dialect()), globals_)
        ast = starlark.parse(
            str(self.tiltfile), self.tiltfile.read_text(encoding="utf-8"), tilt_dialect()
        )
        try:
            starlark.eval(module, ast, globals_)
        except starlark.StarlarkError:
            if self.rec.failure is None:
                raise
        return self.rec

    # -- Tilt's resource assembly ------------------------------------------------------------

    def assemble(self) -> dict[str, Resource]:
        """Resources as Tilt builds them from the recording; raises TiltfileError where Tilt
        would refuse the Tiltfile."""
        rec = self.rec
        resources: dict[str, Resource] = {}
        claimed: set[int] = set()
        image_refs = {build.ref for build in rec.docker_builds}
        for index, obj in enumerate(rec.objects):
            if obj["kind"] in WORKLOAD_KINDS:
                name = obj["metadata"]["name"]
                if name in resources:
                    raise TiltfileError(f"two workloads named {name}: Tilt would rename them")
                images = sorted(
                    {image_name(c.get("image", "")) for c in pod_containers(obj)} & image_refs
                )
                resources[name] = Resource(name, "k8s", [obj], workload=obj, images=images)
                claimed.add(index)
        for index, obj in enumerate(rec.objects):
            if obj["kind"] == "Service" and index not in claimed:
                selector = obj.get("spec", {}).get("selector") or {}
                for resource in resources.values():
                    labels = pod_labels(resource.workload)
                    same_ns = _namespace(obj) == _namespace(resource.workload)
                    if selector and same_ns and selector.items() <= labels.items():
                        resource.objects.append(obj)
                        claimed.add(index)
                        break

        for call in rec.k8s_resource_calls:
            if call["workload"]:
                if call["workload"] not in resources:
                    raise TiltfileError(
                        f"k8s_resource: no resource named {call['workload']!r}; "
                        f"resources: {sorted(resources)}"
                    )
                resource = resources[call["workload"]]
                if call["new_name"]:
                    del resources[resource.name]
                    resource.name = call["new_name"]
                    resources[resource.name] = resource
            else:
                if call["new_name"] in resources:
                    raise TiltfileError(f"k8s_resource: resource {call['new_name']!r} exists")
                resource = Resource(call["new_name"], "k8s")
                resources[resource.name] = resource
            for selector in call["objects"]:
                matches = [
                    i for i, obj in enumerate(rec.objects) if selector_matches(selector, obj)
                ]
                if len(matches) != 1:
                    raise TiltfileError(f"object selector {selector!r} matches {len(matches)} objects")
                if matches[0] in claimed:
                    raise TiltfileError(f"object selector {selector!r}: object already in a resource")
                claimed.add(matches[0])
                resource.objects.append(rec.objects[matches[0]])
            resource.port_forwards += call["port_forwards"]
            resource.links += call["links"]
            resource.labels += call["labels"]
            resource.resource_deps += call["resource_deps"]
            resource.trigger_mode = call["trigger_mode"]
            resource.auto_init = call["auto_init"]
            resource.pod_readiness = call["pod_readiness"]

        leftover = [obj for i, obj in enumerate(rec.objects) if i not in claimed]
        if leftover:
            resources[UNCATEGORIZED] = Resource(UNCATEGORIZED, "k8s", leftover)

        for call in rec.local_resources:
            if call["name"] in resources:
                raise TiltfileError(f"local_resource: resource {call['name']!r} exists")
            resources[call["name"]] = Resource(
                call["name"], "local", labels=call["labels"], resource_deps=call["resource_deps"],
                trigger_mode=call["trigger_mode"], auto_init=call["auto_init"], cmd=call["cmd"],
                deps=call["deps"],
            )

        for resource in resources.values():
            for dep in resource.resource_deps:
                if dep not in resources:
                    raise TiltfileError(f"resource {resource.name} depends on unknown {dep!r}")
            for label in resource.labels:
                if not LABEL_RE.match(label):
                    raise TiltfileError(f"resource {resource.name}: invalid label {label!r}")
        return resources


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
