"""Structured logs: what the real gateway, entrypoint and health check write, read back through
the rules of the Fluent Bit config in kustomize/components/logging.

No Fluent Bit binary installs here (not in Debian or PyPI), so its parsers are applied in Python
as written in the ConfigMap: the CRI regex (Onigmo `(?<name>...)` groups, which Python spells
`(?P<name>...)`), then JSON, then the Time_Format (translated from Fluent Bit's strptime)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from devloop.common import logs
from devloop.manifests import kustomize

ROOT = kustomize.project_root(Path(__file__).parent)

# Fluent Bit strptime directives -> regex groups (%L: fractional seconds, any number of digits).
_DIRECTIVES = {
    "%Y": r"(?P<Y>\d{4})", "%m": r"(?P<m>\d{2})", "%d": r"(?P<d>\d{2})",
    "%H": r"(?P<H>\d{2})", "%M": r"(?P<M>\d{2})", "%S": r"(?P<S>\d{2})",
    "%L": r"(?P<L>\d{1,9})", "%z": r"(?P<z>Z|[+-]\d{2}:?\d{2})",
}


def parse_time(value: str, time_format: str) -> datetime:
    """`value` parsed by `time_format` as Fluent Bit would; raises ValueError if it does not fit."""
    pattern = "".join(
        _DIRECTIVES[token] if token in _DIRECTIVES else re.escape(token)
        for token in re.findall(r"%.|[^%]", time_format)
    )
    match = re.fullmatch(pattern, value)
    if not match:
        raise ValueError(f"{value!r} does not match Time_Format {time_format!r}")
    parts = match.groupdict()
    moment = datetime(int(parts["Y"]), int(parts["m"]), int(parts["d"]), int(parts["H"]),
                      int(parts["M"]), int(parts["S"]), int((parts.get("L") or "0")[:6].ljust(6, "0")),
                      tzinfo=UTC)
    return moment  # no %z, or Z: UTC (Fluent Bit's default without Time_System_Timezone)


def _sections(text: str, kind: str) -> list[dict[str, str]]:
    sections, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = {} if line == f"[{kind}]" else None
            if current is not None:
                sections.append(current)
        elif current is not None:
            key, _, value = line.partition(" ")
            current[key] = value.strip()
    return sections


@pytest.fixture(scope="module")
def fluent_bit() -> dict[str, dict[str, str]]:
    """The component as kustomize renders it: its parsers by name, and its pipeline sections."""
    objects = kustomize.load_objects(kustomize.render(ROOT / "kustomize/components/logging"))
    config = kustomize.find_object(objects, "ConfigMap", "fluent-bit-config")["data"]
    parsers = {p["Name"]: p for p in _sections(config["parsers.conf"], "PARSER")}
    return {"parsers": parsers, "config": config["fluent-bit.conf"]}


def _cri_line(message: str, stream: str = "stderr") -> str:
    """What containerd writes to /var/log/pods for one line of a container's output."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # nanoseconds
    return f"{now} {stream} F {message}"


def _fluent_bit_records(lines: list[str], fluent_bit) -> list[dict]:
    """The tail input's cri parser, then the parser filter's devloop_json, as configured."""
    cri = fluent_bit["parsers"]["cri"]
    regex = re.compile(re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", cri["Regex"]))
    structured = fluent_bit["parsers"]["devloop_json"]
    assert structured["Format"] == "json"
    records = []
    for line in lines:
        outer = regex.fullmatch(_cri_line(line))
        assert outer, f"the cri parser does not match {line!r}"
        parse_time(outer["time"], cri["Time_Format"])
        record = json.loads(outer["log"])  # the parser filter on Key_Name log
        parse_time(record[structured["Time_Key"]], structured["Time_Format"])
        records.append(record)
    return records


def _check_schema(record: dict) -> None:
    assert list(record)[:4] == list(logs.REQUIRED_KEYS), record
    assert record["level"] in {"debug", "info", "warning", "error", "critical"}
    assert isinstance(record["message"], str) and record["logger"].startswith("devloop")


def test_the_pipeline_reads_the_llm_pods_and_uses_both_parsers(fluent_bit):
    config = fluent_bit["config"]
    assert "Path              /var/log/containers/llm-*.log" in config
    assert re.search(r"Parser\s+cri\b", config) and re.search(r"Parser\s+devloop_json\b", config)
    assert re.search(r"Key_Name\s+log\b", config)  # the cri parser's message group
    assert fluent_bit["parsers"]["devloop_json"]["Time_Format"] == logs.TIME_FORMAT_FLUENT_BIT


def test_gateway_lines_parse_with_request_ids_and_access_fields(
    start_gateway, toy_upstream, fluent_bit
):
    gateway = start_gateway(toy_upstream.url, "", env={"DEVLOOP_LOG_FORMAT": ""})
    given = requests.get(gateway.url + "/v1/models", headers={"X-Request-ID": "trace-42"}, timeout=10)
    assert given.headers["X-Request-ID"] == "trace-42"
    fresh = requests.post(gateway.url + "/v1/completions", timeout=10,
                          json={"model": "m", "prompt": "hi", "max_tokens": 1, "temperature": 0})
    generated = fresh.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    forged = requests.get(gateway.url + "/v1/models", headers={"X-Request-ID": 'a" b'}, timeout=10)
    assert forged.headers["X-Request-ID"] != 'a" b'
    gateway.stop()

    lines = [line for line in gateway.log().splitlines() if line.strip()]
    records = _fluent_bit_records(lines, fluent_bit)
    for record in records:
        _check_schema(record)
    access = [r for r in records if r["logger"] == "devloop.gateway.access"]
    by_id = {r["request_id"]: r for r in access}
    assert by_id["trace-42"]["path"] == "/v1/models" and by_id["trace-42"]["status"] == 200
    completion = by_id[generated]
    assert completion["method"] == "POST" and completion["cache"] in {"MISS", "HIT", "BYPASS"}
    assert isinstance(completion["duration_ms"], float) and completion["status"] == fresh.status_code


def test_entrypoint_and_health_lines_parse(fluent_bit, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    env = {**os.environ, "MODEL_NAME": str(model), "MAX_MODEL_LEN": "64", "MAX_NUM_SEQS": "1",
           "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HOME": str(tmp_path / "hf"),
           "VLLM_CACHE_ROOT": str(tmp_path / "vllm"), "DEVLOOP_LOG_FORMAT": ""}
    entry = subprocess.run([sys.executable, "-m", "devloop", "entrypoint", "--dry-run"], env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert entry.returncode == 0, entry.stderr
    health = subprocess.run([sys.executable, "-m", "devloop", "health", "--url",
                             "http://127.0.0.1:9", "--wait", "--timeout", "1"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    records = _fluent_bit_records(entry.stderr.splitlines() + health.stderr.splitlines(), fluent_bit)
    for record in records:
        _check_schema(record)
    settings = next(r for r in records if r["message"] == "effective engine configuration")
    assert settings["settings"]["max model len"] == "64 tokens"
    assert any(r["logger"] == "devloop.health" and "waiting_for" in r for r in records)


def test_a_terminal_gets_readable_lines_and_the_variable_overrides():
    class Terminal:
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format(Terminal(), {}) == logs.TEXT
    assert logs.resolve_format(Terminal(), {logs.FORMAT_ENV: "json"}) == logs.JSON
    with open(os.devnull, "w") as file:
        assert logs.resolve_format(file, {}) == logs.JSON
        assert logs.resolve_format(file, {logs.FORMAT_ENV: "text"}) == logs.TEXT
