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

import os
import posixpath
from pathlib import Path
from typing import Any

import starlark

from .fake_kubectl import FakeCluster
from .tilt_assembly import assemble
from .tilt_builtins import TiltBuiltins
from .tilt_records import (
    Blob,
    LiveUpdateStep,
    Recording,
    Resource,
    TiltfileError,
    TriggerMode,
    _is_within,
    tilt_dialect,
)


class TiltEnvironment(TiltBuiltins):
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
        """Tilt's API: each builtin with the parameter names and defaults of Tilt's reference,
        recording into `self.rec`; grouped as the reference groups them."""
        return {
            **self._core_builtins(),
            **self._yaml_builtins(),
            **self._image_builtins(),
            **self._resource_builtins(),
            **self._local_resource_builtins(),
            **self._config_builtins(),
            **self._os_builtins(),
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

    def assemble(self) -> dict[str, Resource]:
        """Resources as Tilt builds them from the recording; raises TiltfileError where Tilt
        would refuse the Tiltfile."""
        return assemble(self.rec)
