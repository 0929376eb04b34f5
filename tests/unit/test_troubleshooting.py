"""The troubleshooting page (docs/troubleshooting.md, once the README's section) stays true: every `devloop` command in it parses with the
real CLI, and every `kubectl` command is one the real kubectl accepts (subcommand and flags, via
`--help`) naming namespaces, objects, containers, labels and ports that the rendered overlays have.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devloop.cli import build_parser
from devloop.manifests import kustomize

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "troubleshooting.md"

# The symptoms the guide this project grew from spends its troubleshooting on.
SYMPTOMS = {
    "pod killed while loading the model": r"restarts while it is still loading",
    "VLLM_PORT collision": r"VLLM_PORT",
    "image architecture mismatch": r"architecture mismatch",
    "DNS blocked by NetworkPolicy": r"DNS blocked by a NetworkPolicy",
    "out of memory from KV-cache sizing": r"Out of memory",
    "slow first request": r"first request is slow",
    "Redis down": r"Redis is down",
    "engine killed by SIGILL on an AMX CPU": r"killed by `SIGILL`",
}

KINDS = {
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
    "svc": "Service", "service": "Service", "services": "Service",
    "pvc": "PersistentVolumeClaim", "persistentvolumeclaim": "PersistentVolumeClaim",
    "netpol": "NetworkPolicy", "networkpolicy": "NetworkPolicy", "networkpolicies": "NetworkPolicy",
    "configmap": "ConfigMap", "cm": "ConfigMap",
}
UNNAMED_TYPES = {"pods", "pod", "po", "events", "nodes", "node", "ingressclass", "ingressclasses",
                 "storageclass", "storageclasses"} | set(KINDS)
# Subcommands whose first positional argument is a resource (TYPE, TYPE/NAME or TYPE NAME).
RESOURCE_VERBS = {"get", "describe", "logs", "exec", "port-forward", "delete", "edit",
                  ("rollout", "restart"), ("rollout", "status"), "top"}
FLAGS_WITH_VALUE = {"-n", "--namespace", "-c", "--container", "-l", "--selector", "-o", "--output",
                    "-L", "--label-columns", "--field-selector", "--sort-by", "--tail", "--context"}


def section() -> str:
    """The page, from its title on (the entries are its ## sections)."""
    text = PAGE.read_text(encoding="utf-8")
    assert text.startswith("# Troubleshooting\n"), f"{PAGE} is not the troubleshooting page"
    return text


def entries() -> dict[str, str]:
    parts = re.split(r"^## (.+)\n", section(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def commands(tool: str) -> list[str]:
    """Every `tool ...` line of the section's bash blocks, and every inline code span that is one."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", section(), re.DOTALL):
        found += [line.strip() for line in block.splitlines() if line.strip().startswith(tool + " ")]
    found += [span for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", section(), flags=re.DOTALL))
              if span.startswith(tool + " ")]
    return sorted(set(found))


@dataclass
class Overlay:
    namespace: str
    objects: list[dict[str, Any]] = field(default_factory=list)

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((obj for obj in self.objects
                     if obj["kind"] == kind and obj["metadata"]["name"] == name), None)

    def pod_templates(self) -> list[dict[str, Any]]:
        return [obj["spec"]["template"] for obj in self.objects if obj["kind"] == "Deployment"]


@pytest.fixture(scope="module")
def overlays() -> dict[str, Overlay]:
    """Namespace -> the rendered overlay that deploys into it."""
    by_namespace = {}
    for name in ("dev", "optimized"):
        objects = kustomize.load_objects(kustomize.render_overlay(name, ROOT))
        namespace = next(obj["metadata"]["name"] for obj in objects if obj["kind"] == "Namespace")
        by_namespace[namespace] = Overlay(namespace, objects)
    return by_namespace


def parse_kubectl(command: str) -> tuple[dict[str, str], list[str]]:
    """The options (flag -> value) and positional words of a kubectl command line."""
    tokens = shlex.split(command.split(" | ")[0], comments=True)[1:]
    if "--" in tokens:
        tokens = tokens[:tokens.index("--")]
    options: dict[str, str] = {}
    positional: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in FLAGS_WITH_VALUE:
            options[token] = tokens[index + 1]
            index += 2
            continue
        if token.startswith("-"):
            name, _, value = token.partition("=")
            options[name] = value
        else:
            positional.append(token)
        index += 1
    return options, positional


def port_problems(ref: str, workload: dict, rest: list[str]) -> list[str]:
    """`port-forward REF [LOCAL:]REMOTE`: REMOTE must be a port the Service or a container has."""
    remote = int(rest[0].split(":")[-1])
    if workload["kind"] == "Service":
        ports = [port["port"] for port in workload["spec"].get("ports", [])]
    else:  # a workload: kubectl forwards to the port a container declares
        ports = [port["containerPort"]
                 for container in workload["spec"]["template"]["spec"]["containers"]
                 for port in container.get("ports", [])]
    return [] if remote in ports else [f"{ref} has no port {remote} (it has {ports})"]


def pod_problems(options: dict[str, str], workload: dict | None, overlay: Overlay,
                 namespace: str) -> list[str]:
    """-c CONTAINER and -l SELECTOR must name a container and a label the pods have."""
    problems = []
    container = options.get("-c") or options.get("--container")
    if container:
        templates = [workload["spec"]["template"]] if workload and "template" in workload.get("spec", {}) \
            else overlay.pod_templates()
        names = {c["name"] for template in templates for c in template["spec"]["containers"]}
        if container not in names:
            problems.append(f"container {container} is not one of {sorted(names)}")
    selector = options.get("-l") or options.get("--selector")
    if selector:
        key, _, value = selector.partition("=")
        if not any(template["metadata"]["labels"].get(key) == value for template in overlay.pod_templates()):
            problems.append(f"no pod of the {namespace} overlay has the label {selector}")
    return problems


def kubectl_problems(command: str, overlays: dict[str, Overlay]) -> list[str]:
    """What in a kubectl command line names something the overlays do not have (empty: fine)."""
    options, positional = parse_kubectl(command)
    problems = []
    namespace = options.get("-n") or options.get("--namespace")
    overlay = overlays.get(namespace) if namespace else None
    if namespace and overlay is None:
        problems.append(f"namespace {namespace} is not one of {sorted(overlays)}")
        return problems
    verb: Any = positional[0] if positional else ""
    args = positional[1:]
    if verb == "rollout" and args:
        verb, args = ("rollout", args[0]), args[1:]
    if verb not in RESOURCE_VERBS or not args or overlay is None:
        return problems
    if verb == "top":
        args = args[1:]  # `top pod [NAME]`
    workload = None
    if args and "/" in args[0]:
        kind_alias, name = args[0].split("/", 1)
        rest = args[1:]
    elif args and len(args) >= 2 and args[0] in KINDS:
        kind_alias, name, rest = args[0], args[1], args[2:]
    else:
        if args and args[0] not in UNNAMED_TYPES:
            problems.append(f"unknown resource type {args[0]}")
        kind_alias, name, rest = None, None, []
    if kind_alias is not None:
        kind = KINDS.get(kind_alias)
        workload = overlay.named(kind, name) if kind else None
        if workload is None:
            problems.append(f"{kind_alias}/{name} is not in the {namespace} overlay")
    if verb == "port-forward" and workload is not None and rest:
        problems += port_problems(f"{kind_alias}/{name}", workload, rest)
    return problems + pod_problems(options, workload, overlay, namespace)


def kubectl_accepts(command: str) -> subprocess.CompletedProcess:
    """The real kubectl parses the subcommand and every flag; `--help` stops it before it would
    contact a cluster (an unknown subcommand or flag still exits 1)."""
    tokens = shlex.split(command.split(" | ")[0], comments=True)[1:]
    if "--" in tokens:
        tokens = tokens[:tokens.index("--")]
    return subprocess.run([kustomize.kubectl_path(), *tokens, "--help"], capture_output=True, text=True,
                          env={"KUBECONFIG": "/nonexistent", "PATH": "/usr/bin:/bin"}, timeout=60,
                          check=False)


def test_every_symptom_has_an_entry_with_commands_and_a_fix():
    found = entries()
    for symptom, heading in SYMPTOMS.items():
        matching = [title for title in found if re.search(heading, title)]
        assert matching, f"no entry in {PAGE.name} for {symptom}"
        body = found[matching[0]]
        assert "```bash" in body, f"{matching[0]}: no command that shows it"
        assert "Fix:" in body, f"{matching[0]}: no fix"


def test_every_devloop_command_parses():
    devloop = commands("devloop")
    assert any(cmd.startswith("devloop doctor") for cmd in devloop)
    parser = build_parser()
    for command in devloop:
        try:
            parser.parse_args(shlex.split(command, comments=True)[1:])
        except SystemExit as exit_:
            pytest.fail(f"`{command}` does not parse (exit {exit_.code})")


@pytest.mark.parametrize("command", commands("kubectl"))
def test_every_kubectl_command_is_real_and_names_what_the_overlays_have(command, overlays):
    assert kubectl_problems(command, overlays) == []
    result = kubectl_accepts(command)
    assert result.returncode == 0, f"`{command}`: {result.stderr.strip()}"


def test_the_section_has_kubectl_commands_in_both_namespaces():
    used = " ".join(commands("kubectl"))
    assert "-n vllm-dev" in used and "-n vllm-optimized" in used


@pytest.mark.parametrize("command, problem", [
    ("kubectl -n vllm-dev logs deploy/llm-engine -c engine", "container engine"),
    ("kubectl -n vllm-dev logs deploy/vllm -c vllm", "deploy/vllm is not"),
    ("kubectl -n vllm-prod get pods", "namespace vllm-prod"),
    ("kubectl -n vllm-dev get networkpolicy llm-engine -o yaml", "networkpolicy/llm-engine is not"),
    ("kubectl -n vllm-dev port-forward svc/llm-engine 8000:80", "no port 80"),
    ("kubectl -n vllm-dev get pods -l app.kubernetes.io/name=vllm", "label"),
])
def test_the_checker_catches_names_that_do_not_exist(command, problem, overlays):
    problems = kubectl_problems(command, overlays)
    assert problems and problem in problems[0]


@pytest.mark.parametrize("command", ["kubectl -n vllm-dev logs deploy/llm-engine -c vllm --previus",
                                     "kubectl -n vllm-dev lgs deploy/llm-engine"])
def test_kubectl_rejects_a_misspelt_flag_or_subcommand(command):
    assert kubectl_accepts(command).returncode != 0


def test_the_image_named_is_the_one_the_manifests_run(overlays):
    images = {container["image"] for overlay in overlays.values() for template in overlay.pod_templates()
              for container in template["spec"]["containers"]}
    for image in set(re.findall(r"\bvllm-devloop:\w+", section())):
        assert image in images
