"""`devloop validate`: render overlays and validate every object against the Kubernetes API schema.

Built-in kinds are checked with kubernetes-validate in strict mode (unknown fields are errors, as
a real API server with field validation treats them); custom resources are checked against the
openAPIV3Schema of their CRD in kustomize/crds/, its CEL rules included (cel.py). Prints the time
each overlay took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devloop.common.errors import DevloopError
from devloop.manifests import cel, kustomize

# The oldest Kubernetes minor the local clusters we support still ship (Docker Desktop, kind,
# k3d, minikube as of 2026); an object valid here is valid on newer ones.
KUBERNETES_VERSION = "1.32.0"
CRD_DIR = f"{kustomize.KUSTOMIZE_DIR}/crds"


@dataclass
class OverlayReport:
    overlay: str
    objects: int = 0
    render_seconds: float = 0.0
    validate_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def load_crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON schema, for every served version of every CRD in crd_dir and
    its folders (one per upstream release: gateway-api-v1.6.1/, ...)."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(crd_dir.rglob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = _reject_unknown_fields(schema)
    return schemas


def _reject_unknown_fields(node: Any) -> Any:
    """A CRD schema lists known fields but does not forbid others: the API server prunes or, with
    `kubectl apply --validate=strict`, rejects them. Forbid them here too, so a typo such as
    `spec.endpoint` fails validation instead of silently vanishing in the cluster."""
    if isinstance(node, list):
        return [_reject_unknown_fields(item) for item in node]
    if not isinstance(node, dict):
        return node
    strict = {}
    for key, value in node.items():
        if key == "properties":  # a map of field name -> schema, not a schema itself
            strict[key] = {name: _reject_unknown_fields(sub) for name, sub in value.items()}
        else:
            strict[key] = _reject_unknown_fields(value)
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        strict["additionalProperties"] = False
    return strict


def validate_objects(
    objects: list[dict[str, Any]],
    crd_schemas: dict[tuple[str, str], dict[str, Any]],
    kubernetes_version: str = KUBERNETES_VERSION,
) -> list[str]:
    """One message per invalid object: `Kind/name: what is wrong`."""
    try:
        import jsonschema
        import kubernetes_validate
    except ImportError as missing:
        raise DevloopError(
            f"{missing.name} is not installed: run `pip install -e '.[test]'` (bootstrap.sh does)"
        ) from missing

    errors = []
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        crd_schema = crd_schemas.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        try:
            if crd_schema is not None:
                jsonschema.validate(obj, crd_schema)
                errors += [f"{where}: {problem}" for problem in cel.object_violations(crd_schema, obj)]
            else:
                kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{where}: no schema for {obj.get('apiVersion')} {obj.get('kind')} "
                          f"in Kubernetes {kubernetes_version} or in {CRD_DIR}/")
        except jsonschema.ValidationError as invalid:
            path = ".".join(str(part) for part in invalid.absolute_path) or "(root)"
            errors.append(f"{where}: {path}: {invalid.message}")
    return errors


def validate_overlay(name: str, root: Path, crd_schemas: dict) -> OverlayReport:
    report = OverlayReport(overlay=name)
    started = time.perf_counter()
    objects = kustomize.load_objects(kustomize.render_overlay(name, root))
    rendered = time.perf_counter()
    report.errors = validate_objects(objects, crd_schemas)
    report.objects = len(objects)
    report.render_seconds = round(rendered - started, 3)
    report.validate_seconds = round(time.perf_counter() - rendered, 3)
    return report


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="render overlays and validate them against the Kubernetes schemas",
        description=f"Render each overlay and validate every object strictly against Kubernetes "
        f"{KUBERNETES_VERSION} (built-in kinds) and the CRDs in {CRD_DIR}/. Exit 1 if any is invalid.",
    )
    parser.add_argument("--overlay", action="append", help="overlay to check (repeatable; default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    root = kustomize.project_root()
    names = args.overlay or kustomize.overlay_names(root)
    for name in names:
        kustomize.overlay_dir(name, root)  # an unknown name fails before any work is done
    crd_schemas = load_crd_schemas(root / CRD_DIR)
    started = time.perf_counter()
    reports = [validate_overlay(name, root, crd_schemas) for name in names]
    total = round(time.perf_counter() - started, 3)
    if args.json:
        print(json.dumps({"kubernetes_version": KUBERNETES_VERSION, "total_seconds": total,
                          "overlays": [asdict(report) for report in reports]}, indent=2))
    else:
        print(f"{'overlay':<12} {'objects':>7} {'render s':>9} {'validate s':>10}  result")
        for report in reports:
            result = "ok" if not report.errors else f"{len(report.errors)} invalid"
            print(f"{report.overlay:<12} {report.objects:>7} {report.render_seconds:>9.3f} "
                  f"{report.validate_seconds:>10.3f}  {result}")
        print(f"total {total:.3f} s, Kubernetes {KUBERNETES_VERSION}")
        for report in reports:
            for error in report.errors:
                print(f"{report.overlay}: {error}", file=sys.stderr)
    return 1 if any(report.errors for report in reports) else 0
