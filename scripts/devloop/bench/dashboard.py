"""Which metric series a Grafana dashboard queries, and whether a server exports them.

A dashboard panel whose query names a series nobody exports draws nothing and raises no error
(the guide this project grew from queried `vllm_requests_total`, which vLLM never had). So the
names are read out of every PromQL expression in the dashboard and looked up, as written, in a
real /metrics scrape. Names are matched as sample names: a histogram is queried and exported as
`<family>_bucket`, `_sum` and `_count`, a counter as `<family>_total`, and a bare family name
that Prometheus would not have either is reported as missing.

`devloop dashboard-check --metrics-url URL ...` runs the same check against running servers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from devloop.common.errors import DevloopError, UsageError

DASHBOARD_PATH = "kustomize/components/monitoring/grafana-dashboard-vllm.json"

# Words PromQL reserves that can stand where a metric name could: aggregation operators (which
# may take `by (...)` before their parenthesis), set and grouping operators, modifiers, literals.
_KEYWORDS = frozenset(
    """sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk
    limit_ratio by without on ignoring group_left group_right bool offset and or unless atan2
    inf nan start end""".split()  # noqa: SIM905 - a word list reads better as text
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\[\[[^\]]*\]\]|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
# A name starts where no other name, number or dot character stands before it (so the `e` of
# 1e-9 and the `m` of 5m are not names).
_NAME = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*)\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\s*\((.*)\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (label names, function names, keywords,
    Grafana variables, durations and numbers left out)."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _GROUPING.sub("", text)
    text = _RANGE.sub("", text)
    names = set()
    for match in _NAME.finditer(text):
        name = match.group()
        follows = text[match.end() :].lstrip()
        if name in _KEYWORDS or follows.startswith("("):
            continue  # an operator, or a function call
        names.add(name)
    return names


def _templating_expr(query: Any) -> str | None:
    """The PromQL inside a Grafana template variable's query, if it has one."""
    if isinstance(query, dict):
        query = query.get("query")
    if not isinstance(query, str):
        return None
    if match := _LABEL_VALUES.match(query):
        args = match.group(1)
        # label_values(label) has no metric; label_values(selector, label) has one first.
        depth = 0
        for index, char in enumerate(args):
            depth += char in "({["
            depth -= char in ")}]"
            if char == "," and depth == 0:
                return args[:index]
        return None
    if match := _QUERY_RESULT.match(query):
        return match.group(1)
    return None


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) for every query: panel targets, panels nested in rows, and the
    template variables' queries."""

    def panels(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if isinstance(target.get("expr"), str) and target["expr"].strip():
                yield (
                    f"panel {panel.get('title', panel.get('id'))!r} {target.get('refId', '')}",
                    target["expr"],
                )
    for variable in dashboard.get("templating", {}).get("list", []):
        expr = _templating_expr(variable.get("query"))
        if expr:
            yield f"variable ${variable.get('name')}", expr


def dashboard_metric_names(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """metric name -> the places in the dashboard that query it."""
    used: dict[str, list[str]] = {}
    for where, expr in dashboard_queries(dashboard):
        for name in metric_names(expr):
            used.setdefault(name, []).append(where)
    return used


def scrape_sample_names(exposition: str) -> set[str]:
    """The sample names in a Prometheus text exposition (the part before `{` or the value)."""
    names = set()
    for line in exposition.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def missing_metrics(
    dashboard: dict[str, Any], exported: set[str], prefixes: tuple[str, ...] = ("",)
) -> dict[str, list[str]]:
    """The dashboard's names that start with one of `prefixes` and are not in `exported`,
    with where each is used."""
    return {
        name: where
        for name, where in sorted(dashboard_metric_names(dashboard).items())
        if name.startswith(prefixes) and name not in exported
    }


def load_dashboard(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no dashboard at {path}") from None
    except json.JSONDecodeError as error:
        raise DevloopError(f"{path} is not valid JSON: {error}") from None


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard-check",
        help="check that every series the Grafana dashboard queries is exported",
        description="Scrape each --metrics-url and report every metric name in the dashboard's "
        "PromQL that none of them exports. Point it at the engine and the gateway "
        "(e.g. port-forwards); exits 1 when a name is missing.",
    )
    parser.add_argument(
        "--metrics-url",
        action="append",
        required=True,
        help="a /metrics URL (repeat for the engine and the gateway)",
    )
    parser.add_argument(
        "--dashboard", type=Path, help=f"dashboard JSON (default: {DASHBOARD_PATH})"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import requests

    from devloop.manifests.kustomize import project_root

    path = args.dashboard or project_root() / DASHBOARD_PATH
    dashboard = load_dashboard(path)
    exported: set[str] = set()
    for url in args.metrics_url:
        try:
            response = requests.get(url, timeout=10)
            response.raise_for_status()
        except requests.RequestException as error:
            raise DevloopError(f"cannot scrape {url}: {error}") from None
        exported |= scrape_sample_names(response.text)
    used = dashboard_metric_names(dashboard)
    missing = missing_metrics(dashboard, exported)
    for name, where in missing.items():
        print(f"missing: {name} (queried by {', '.join(where)})")
    print(f"{len(used) - len(missing)} of {len(used)} queried series exported", file=sys.stderr)
    return 1 if missing else 0
