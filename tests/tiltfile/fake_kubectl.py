"""The cluster the Tiltfile asks with `local('kubectl ...')`, answering as the real kubectl does.

Tilt has no API that says which CustomResourceDefinitions a cluster has, so the Tiltfile runs
`kubectl get customresourcedefinitions -o custom-columns=...` through `local()`. This stands in
for that one command against a cluster holding the CRD objects it is given (the real
prometheus-operator CRD from kustomize/crds/, for instance): the same columns, the same silence
on stdout when there are none ("No resources found" goes to stderr), and a non-zero exit, which
fails Tilt's load, when the cluster does not answer. The capacity check's `get nodes` and
`get pods --all-namespaces` answer `-o json` with the node and pod objects given (by default one
roomy kind node and no other pods), wrapped as the Tiltfile wraps them in
`sh -c 'kubectl "$@" 2>/dev/null || true'`, which prints nothing where kubectl fails. Any other
command is refused, so a test can never pass on a command the harness does not know.

A command run through `sh -c SCRIPT` (the Tiltfile wraps kubectl so that its failure does not
fail the load) runs in the real /bin/sh, with this stand-in as the `kubectl` on its PATH: the
script's quoting, exit codes and redirections are the shell's own, not an imitation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SHELL = "/bin/sh"
NODE_NAMES = {"nodes", "node", "no"}
POD_NAMES = {"pods", "pod", "po"}


def kind_node(cpu: str = "16", memory: str = "64Gi", name: str = "kind-control-plane") -> dict[str, Any]:
    """A node as `kubectl get nodes -o json` lists it, with this allocatable CPU and memory."""
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110",
                                       "ephemeral-storage": "100Gi"},
                       "nodeInfo": {"architecture": "amd64", "kubeletVersion": "v1.32.2"}}}


def placed_pod(namespace: str, name: str, cpu: str, memory: str, node: str = "kind-control-plane",
               phase: str = "Running") -> dict[str, Any]:
    """A pod the scheduler has placed on `node`, requesting this much."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": namespace, "name": name},
            "spec": {"nodeName": node, "containers": [
                {"name": "main", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
            "status": {"phase": phase}}


CRD_RESOURCE_NAMES = {"customresourcedefinitions", "customresourcedefinition", "crd", "crds",
                      "customresourcedefinitions.apiextensions.k8s.io"}


class KubectlFailed(Exception):
    """kubectl exited non-zero; the message is its stderr."""


class UnknownCommand(Exception):
    """A command this stand-in does not emulate."""


@dataclass
class FakeCluster:
    """A reachable (or not) cluster of kube context `context` with these CRDs installed."""

    context: str = "kind-kind"
    crds: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=lambda: [kind_node()])
    pods: list[dict[str, Any]] = field(default_factory=list)  # in every namespace
    reachable: bool = True
    commands: list[list[str]] = field(default_factory=list)  # every argv run, in order
    kubectl_installed: bool = True  # False: a shell finds no kubectl on its PATH at all
    # A kubeconfig path: a shell's `kubectl` is then the real one, against that kubeconfig (a
    # server that is down, say), and its commands are not recorded.
    real_kubeconfig: str = ""

    @classmethod
    def with_crd_files(cls, *paths: Path, **kwargs: Any) -> FakeCluster:
        crds = [doc for path in paths for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
                if doc and doc.get("kind") == "CustomResourceDefinition"]
        return cls(crds=crds, **kwargs)

    def run(self, argv: list[str]) -> str:
        """What `argv` prints on stdout; KubectlFailed for a non-zero exit."""
        if argv[:2] == ["sh", "-c"]:
            return _run_in_shell(self, argv)
        self.commands.append(list(argv))
        return self._kubectl(argv)

    def _kubectl(self, argv: list[str]) -> str:
        if not argv or argv[0] != "kubectl":
            raise UnknownCommand(f"only kubectl is emulated, not {argv!r}")
        options, words = _split_flags(argv[1:])
        if options.get("context", self.context) != self.context:
            raise KubectlFailed(f'error: context "{options["context"]}" does not exist')
        if words[:1] != ["get"] or len(words) != 2:
            raise UnknownCommand(f"not emulated: {argv!r}")
        if not self.reachable:
            raise KubectlFailed("The connection to the server 127.0.0.1:6443 was refused - "
                                "did you specify the right host or port?")
        if words[1] in NODE_NAMES | POD_NAMES:
            return self._list_json(words[1], options, argv)
        if words[1] not in CRD_RESOURCE_NAMES:
            raise UnknownCommand(f"not emulated: {argv!r}")
        output = options.get("output", "")
        if not output.startswith("custom-columns="):
            raise UnknownCommand(f"only -o custom-columns= is emulated, not {output!r}")
        columns = [spec.split(":", 1) for spec in output.removeprefix("custom-columns=").split(",")]
        rows = [[_field(crd, path) for _, path in columns] for crd in self.crds]
        if "no-headers" not in options:
            rows.insert(0, [name for name, _ in columns])
        return "".join("   ".join(row) + "\n" for row in rows)

    def _list_json(self, resource: str, options: dict[str, str], argv: list[str]) -> str:
        if options.get("output") != "json":
            raise UnknownCommand(f"not emulated (only -o json for {resource}): {argv!r}")
        if resource in NODE_NAMES:
            items = self.nodes
        elif "all-namespaces" in options or "A" in options:
            items = self.pods
        else:
            raise UnknownCommand(f"not emulated (only pods of every namespace): {argv!r}")
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": items,
                           "metadata": {"resourceVersion": ""}}, indent=4) + "\n"


def _split_flags(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """kubectl's flags (--name=value, --name value, -o value, --boolean) and its other words."""
    aliases = {"o": "output"}
    value_flags = {"context", "output", "request-timeout", "namespace", "n"}
    options: dict[str, str] = {}
    words: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):
            name, sep, value = arg.lstrip("-").partition("=")
            name = aliases.get(name, name)
            if not sep and name in value_flags:
                i += 1
                value = args[i]
            options[name] = value
        else:
            words.append(arg)
        i += 1
    return options, words


def _field(obj: dict[str, Any], path: str) -> str:
    """A custom-columns path such as .spec.names.kind; kubectl prints <none> for a missing one."""
    value: Any = obj
    for key in path.lstrip(".").split("."):
        if not isinstance(value, dict) or key not in value:
            return "<none>"
        value = value[key]
    return str(value)


# ---- `sh -c`: the real shell, with this stand-in as its kubectl ------------------------------

SHIM = """#!{python}
import sys
sys.path.insert(0, {root!r})
from tests.tiltfile.fake_kubectl import shim_main
sys.exit(shim_main({state!r}))
"""


def _run_in_shell(cluster: FakeCluster, argv: list[str]) -> str:
    """Run `sh -c SCRIPT NAME ARGS...` in /bin/sh with a `kubectl` that is this cluster; the
    commands it ran are recorded as if run directly. Non-zero exit: KubectlFailed (stderr)."""
    with tempfile.TemporaryDirectory(prefix="fake-kubectl-") as tmp:
        state = Path(tmp) / "cluster.json"
        state.write_text(json.dumps({**asdict(cluster), "commands": []}), encoding="utf-8")
        shim = Path(tmp) / "kubectl"
        shim.write_text(SHIM.format(python=sys.executable, root=str(ROOT), state=str(state)))
        shim.chmod(0o755)
        path = f"{tmp}{os.pathsep}{os.environ.get('PATH', '')}" if cluster.kubectl_installed else tmp
        if not cluster.kubectl_installed or cluster.real_kubeconfig:
            shim.unlink()
        env = {**os.environ, "PATH": path}
        if cluster.real_kubeconfig:
            env["KUBECONFIG"] = cluster.real_kubeconfig
        result = subprocess.run([SHELL, *argv[1:]], capture_output=True, text=True, env=env,
                                stdin=subprocess.DEVNULL, timeout=60, check=False)
        cluster.commands += json.loads(state.read_text(encoding="utf-8"))["commands"]
    if result.returncode != 0:
        raise KubectlFailed(result.stderr.strip())
    return result.stdout



def shim_main(state_path: str) -> int:
    """The `kubectl` executable a shell finds: answers from the cluster saved at state_path, as
    kubectl would (stdout, stderr, exit 1), and records the command there."""
    state = Path(state_path)
    saved = json.loads(state.read_text(encoding="utf-8"))
    cluster = FakeCluster(**saved)
    code = 0
    try:
        sys.stdout.write(cluster.run(["kubectl", *sys.argv[1:]]))
    except KubectlFailed as failed:
        sys.stderr.write(f"{failed}\n")
        code = 1
    except UnknownCommand as unknown:
        sys.stderr.write(f"fake kubectl: {unknown}\n")
        code = 2
    state.write_text(json.dumps(asdict(cluster)), encoding="utf-8")
    return code
