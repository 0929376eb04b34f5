"""The CEL rules of a CRD schema (`x-kubernetes-validations`), evaluated as the API server does.

JSON Schema checks a custom resource's shape; the rules beside it check what a shape cannot say
(an HTTPRoute's backendRequest timeout no longer than its request timeout, a port wherever a
Service is referenced). The API server refuses an object that breaks one, so `devloop validate`
evaluates them too, with cel-python (PyPI `cel-python`), after the server's own preparation:
the schema's defaults filled in first. Transition rules (those reading `oldSelf`) apply only to
updates and are left out.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from devloop.common.errors import DevloopError


def _celpy() -> Any:
    try:
        import celpy
    except ImportError as missing:
        raise DevloopError(
            f"{missing.name} is not installed: run `pip install -e '.[test]'` (bootstrap.sh does)"
        ) from missing
    return celpy


def _kubernetes_functions() -> dict[str, Any]:
    """Kubernetes' CEL library beyond the standard one, as far as the CRDs here use it."""
    from celpy import celtypes

    def split(text: Any, separator: Any) -> Any:  # the strings extension: "a/b".split("/")
        return celtypes.ListType([celtypes.StringType(part) for part in str(text).split(str(separator))])

    return {"split": split}


@cache
def _program(rule: str) -> Any:
    celpy = _celpy()
    environment = celpy.Environment()
    return environment.program(environment.compile(rule), functions=_kubernetes_functions())


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's `default`s filled in where a field is absent, as the API server
    defaults an object before it validates it."""
    if isinstance(value, dict):
        filled = dict(value)
        for name, sub in schema.get("properties", {}).items():
            if name not in filled and "default" in sub:
                filled[name] = copy.deepcopy(sub["default"])
            if name in filled:
                filled[name] = with_defaults(sub, filled[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in filled.keys() - schema.get("properties", {}).keys():
                filled[name] = with_defaults(extra, filled[name])
        return filled
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(schema["items"], item) for item in value]
    return value


def rule_violations(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """`path: message` for every rule of the schema tree that `value` (already defaulted) breaks."""
    celpy = _celpy()
    problems = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue
        result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and result):
            problems.append(f"{path or '(root)'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, sub_value in value.items():
            sub = properties.get(name, extra if isinstance(extra, dict) else None)
            if sub is not None:
                problems += rule_violations(sub, sub_value, f"{path}.{name}".lstrip("."))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += rule_violations(schema["items"], item, f"{path}.{index}".lstrip("."))
    return problems


def object_violations(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """The CEL rules an object of this CRD schema breaks, after defaulting."""
    return rule_violations(schema, with_defaults(schema, obj))
