"""devloop bench-compare's own logic: plans, the memory sampler against real processes, the
bytes a decode step reads, medians and ratios. Running a plan is a benchmark (README,
Performance), not a test."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

from devloop.bench import compare, membw, plans, procmem
from devloop.common.errors import UsageError


def test_every_plan_names_a_baseline_it_runs_and_kinds_that_exist():
    for plan in plans.PLANS.values():
        names = [c.name for c in plan.candidates]
        assert plan.baseline in names
        assert len(set(names)) == len(names)
        assert {c.kind for c in plan.candidates} <= set(plans.KINDS)


def test_only_keeps_the_named_candidates_and_an_unknown_name_lists_the_real_ones():
    plan = plans.plan_by_name("llamacpp", ["llamacpp-q4_0", "vllm-optimized"])
    assert [c.name for c in plan.candidates] == ["llamacpp-q4_0", "vllm-optimized"]
    assert plan.baseline == "llamacpp-q4_0"  # the plan's own was left out: the first chosen
    with pytest.raises(UsageError, match="llamacpp-bf16"):
        plans.plan_by_name("llamacpp", ["nope"])
    with pytest.raises(UsageError, match="awq-8b"):
        plans.plan_by_name("nope")


def test_the_8b_plan_runs_the_optimized_overlays_settings_apart_from_threads():
    (candidate,) = plans.PLANS["awq-8b"].candidates
    assert candidate.overlay == "optimized"
    assert candidate.settings == {"CPU_THREADS": "auto"}  # KV cache, context, seqs: the overlay's
    assert candidate.model == plans.ModelRef("qwen3-8b", quant="awq")


@pytest.fixture
def sleeper_session():
    """Two real processes in a session of their own, each holding ~40 MB of private memory."""
    code = "import time; block = bytearray(40 << 20); time.sleep(60)"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {code!r}]); {code}"],
        start_new_session=True,
    )
    time.sleep(1.5)
    yield parent.pid
    import os
    import signal

    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()


@pytest.mark.skipif(not procmem.available(), reason="needs Linux's /proc/PID/smaps_rollup")
def test_the_sampler_adds_up_the_pss_of_every_process_in_the_session(sleeper_session):
    pids = procmem.session_pids(sleeper_session)
    assert sleeper_session in pids and len(pids) == 2
    with procmem.SessionMemorySampler(sleeper_session, interval=0.1) as sampler:
        time.sleep(0.5)
    peak = sampler.result
    assert peak.samples >= 2 and peak.peak_processes == 2
    assert peak.peak_pss >= 2 * (40 << 20)
    assert procmem.pss_bytes(sleeper_session) < peak.peak_pss  # one process is not the sum
    assert peak.peak_unreclaimable_pss >= 2 * (40 << 20)  # bytearrays are anonymous memory


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    sizes = {"F16": 2, "I32": 4}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = sizes[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(offset))


@pytest.mark.parametrize("tied, expected", [(True, 2 * 1000 * 8 + 4 * 64), (False, 4 * 64)])
def test_a_decode_step_reads_the_embedding_table_only_when_it_is_the_lm_head(
    tmp_path, tied, expected
):
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": tied}))
    _safetensors(tmp_path / "model.safetensors", {
        "model.embed_tokens.weight": ("F16", [1000, 8]),
        "model.layers.0.mlp.down_proj.qweight": ("I32", [8, 8]),
    })
    assert membw.bytes_read_per_token(tmp_path) == expected


def test_a_gguf_decode_step_reads_its_embedding_table_only_when_it_is_the_lm_head():
    tied = {"token_embd.weight": 1000, "blk.0.ffn_up.weight": 10}
    assert membw.gguf_tensor_bytes(tied) == 1010
    assert membw.gguf_tensor_bytes({**tied, "output.weight": 900}) == 910


def _level(concurrency: int, tok_s: float, tpot: float) -> dict:
    return {"concurrency": concurrency, "output_throughput": tok_s,
            "ttft_ms": {"p50": 100.0, "p99": 200.0}, "tpot_ms": {"p50": tpot, "p99": tpot * 2}}


def test_summary_takes_medians_over_rounds_and_divides_by_the_baseline():
    plan = plans.plan_by_name("llamacpp", ["vllm-defaults", "vllm-optimized"])
    rounds = [
        {"results": {"vllm-defaults": {"levels": [_level(1, d, 50)]},
                     "vllm-optimized": {"levels": [_level(1, o, 40)]}}}
        for d, o in ((10.0, 30.0), (12.0, 20.0), (11.0, 25.0))
    ]
    servers = {"vllm-defaults": {"bytes_read_per_token": 10**9},
               "vllm-optimized": {"bytes_read_per_token": 10**9}}
    summary = compare.summarize(plan, rounds, servers, read_gb_s=50.0)
    optimized = summary["vllm-optimized"]
    assert optimized["levels"]["1"]["output_tok_s"] == 25.0
    assert optimized["ratio_to_baseline"]["1"] == pytest.approx(25.0 / 11.0)
    assert optimized["decode_ceiling_tok_s"] == pytest.approx(50.0)
    assert optimized["c1_fraction_of_ceiling"] == pytest.approx(0.5)
    report = {"summary": summary, "rounds": 3, "read_gb_s": 50.0, "servers": {}}
    table = compare.format_table(plan, report)
    assert "vllm-optimized" in table and "2.27" in table and "50%" in table


def test_the_cli_refuses_an_unknown_plan_and_bad_numbers():
    result = subprocess.run([sys.executable, "-m", "devloop", "bench-compare", "--plan", "x"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "invalid choice" in result.stderr
    with pytest.raises(UsageError, match="--rounds"):
        compare.run(Namespace(plan="tuning", only=None, concurrency="1", rounds=0,
                                   num_prompts=1, input_len=1, output_len=1, one_at_a_time=False))


def test_a_run_stopped_early_keeps_every_turn_it_finished(tmp_path, monkeypatch):
    plan = plans.plan_by_name("llamacpp", ["llamacpp-q4_0", "vllm-optimized"])
    json_path = tmp_path / "report.json"
    seen = []

    class Server:
        def __init__(self, candidate):
            self.candidate, self.model, self.log_path = candidate, tmp_path, tmp_path / "log"
            self.load_seconds = 1.0
            self.memory = Namespace(result=Namespace(peak_pss=1 << 30, peak_processes=1,
                                                     peak_at_s=0.5, peak_unreclaimable_pss=0))

        def stop(self):
            pass

    def bench(server, args):
        if seen:  # the second turn: what the first wrote is on disk already
            partial = json.loads(json_path.read_text())
            assert partial["partial"] is True
            assert list(partial["runs"][0]["results"]) == ["llamacpp-q4_0"]
            assert partial["servers"]["llamacpp-q4_0"]["load_seconds"] == 1.0
            raise KeyboardInterrupt  # the run is stopped here
        seen.append(server.candidate.name)
        return {"levels": [_level(1, 10.0, 50)]}

    monkeypatch.setattr(compare.launcher, "model_path", lambda ref, models_dir: tmp_path)
    monkeypatch.setattr(compare.launcher, "start", lambda c, models_dir, workdir: Server(c))
    monkeypatch.setattr(compare, "_bench", bench)
    monkeypatch.setattr(compare, "bandwidth", lambda threads: {str(threads): 10.0, "1": 5.0})
    monkeypatch.setattr(compare.membw, "bytes_read_per_token", lambda model: 10**9)
    args = Namespace(rounds=2, models_dir=tmp_path, workdir=tmp_path, json_path=str(json_path))
    with pytest.raises(KeyboardInterrupt):
        compare.run_plan(dataclasses.replace(plan, one_at_a_time=True), args)
    assert seen == ["llamacpp-q4_0"]
