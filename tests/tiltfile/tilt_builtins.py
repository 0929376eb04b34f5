"""Tilt's Tiltfile API as recording builtins (see tilt_api.py): each with the parameter names and
defaults of Tilt's API reference (https://docs.tilt.dev/api.html), grouped as the reference
groups them; TiltEnvironment inherits them. (Just over 400 lines: the API is Tilt's, one
short function per builtin.)"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import Any

import starlark

from devloop.manifests.kustomize import render as render_kustomization

from .fake_kubectl import KubectlFailed
from .tilt_records import (
    Blob,
    DockerBuild,
    FailCalled,
    Link,
    LiveUpdateStep,
    PortForward,
    TiltfileError,
    TriggerMode,
    _as_list,
    _check_encodable,
    _load_yaml_stream,
    _parse_tilt_args,
    _port_forward,
)


class TiltBuiltins:
    """The builtins of one evaluation; the state (`rec`, `root`, `context`, `cluster`, ...) and
    `_abs`/`_rel`/`_check_live_update` are TiltEnvironment's."""

    def _core_builtins(self) -> dict[str, Any]:
        """Messages, settings, the kube context, and the files a Tiltfile reads or watches."""
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

        return {
            "fail": fail,
            "warn": warn,
            "print": print_,
            "version_settings": version_settings,
            "k8s_context": k8s_context,
            "allow_k8s_contexts": allow_k8s_contexts,
            "listdir": listdir,
            "read_file": read_file,
            "watch_file": watch_file,
            "blob": blob,
        }

    def _yaml_builtins(self) -> dict[str, Any]:
        """Kubernetes YAML in and out: kustomize, k8s_yaml, local (kubectl), the yaml codecs.
        (Just over 60 lines: six builtins that belong together, each a few lines.)"""
        rec = self.rec

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

        def decode_json(json: Any) -> Any:  # Tilt's parameter name
            text = json.text if isinstance(json, Blob) else str(json)
            return __import__("json").loads(text)

        def decode_yaml(yaml: Any) -> Any:  # Tilt's parameter name
            text = yaml.text if isinstance(yaml, Blob) else str(yaml)
            return json.loads(json.dumps(__import__("yaml").safe_load(text)))

        return {
            "kustomize": kustomize,
            "k8s_yaml": k8s_yaml,
            "decode_yaml_stream": decode_yaml_stream,
            "encode_yaml_stream": encode_yaml_stream,
            "local": local,
            "decode_yaml": decode_yaml,
            "decode_json": decode_json,
        }

    def _image_builtins(self) -> dict[str, Any]:
        """docker_build and its live_update steps. (Over 60 lines because docker_build takes
        Tilt's 24 parameters, each spelled as Tilt spells it.)"""
        rec = self.rec

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

        return {
            "fall_back_on": fall_back_on,
            "sync": sync,
            "run": run,
            "restart_container": restart_container,
            "docker_build": docker_build,
        }

    def _resource_builtins(self) -> dict[str, Any]:
        """k8s_resource and what it takes (port_forward, link)."""
        rec = self.rec

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

        return {
            "port_forward": port_forward,
            "link": link,
            "k8s_resource": k8s_resource,
        }

    def _local_resource_builtins(self) -> dict[str, Any]:
        """local_resource (the buttons) and update_settings."""
        rec = self.rec

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

        return {
            "local_resource": local_resource,
            "update_settings": update_settings,
        }

    def _config_builtins(self) -> dict[str, Any]:
        """config.*: the Tiltfile's settings from tilt_config.json and the args after `--`."""
        rec = self.rec

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

        return {
            "_config_define_string": define_string,
            "_config_define_string_list": define_string_list,
            "_config_define_bool": define_bool,
            "_config_parse": parse,
            "_config_set_enabled_resources": set_enabled_resources,
        }

    def _os_builtins(self) -> dict[str, Any]:
        """os.* and os.path.*, relative to the Tiltfile's directory."""
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
            "_os_getcwd": getcwd,
            "_os_getenv": getenv,
            "_os_path_exists": exists,
            "_os_path_join": join,
            "_os_path_abspath": abspath,
            "_os_path_relpath": relpath,
            "_os_path_basename": basename,
            "_os_path_dirname": dirname,
            "_os_path_realpath": realpath,
        }
