"""The start-up phase read from vLLM's log: the patterns match what the installed vLLM 0.32
writes. The data files are real logs of `devloop serve --overlay dev --model tiny` on the
development VM (eager mode, and with `--set ENFORCE_EAGER=false`), trimmed of the route list."""

from __future__ import annotations

from pathlib import Path

import pytest

from devloop.engine import phases

DATA = Path(__file__).parent / "data"
EAGER = DATA / "vllm-0.32-start-eager.log"
COMPILED = DATA / "vllm-0.32-start-compiled.log"


def phases_in_order(log: Path) -> list[str | None]:
    """The phase after each line of `log`, each change once: what a user watching sees."""
    lines = log.read_text(encoding="utf-8").splitlines()
    seen: list[str | None] = []
    for end in range(len(lines) + 1):
        phase = phases.phase_of("\n".join(lines[:end]))
        if not seen or seen[-1] != phase:
            seen.append(phase)
    return seen


def test_an_eager_start_goes_through_every_phase_in_order():
    assert phases_in_order(EAGER) == [
        None,
        "settings checked; starting vLLM",
        "starting vLLM (importing torch and vLLM)",
        "reading the model's configuration",
        "starting the engine processes",
        "downloading or reading the model weights",
        "loading the model weights",
        "allocating the KV cache",
        "engine ready; starting the API server",
        "opening the API port",
        "API server up",
    ]


def test_a_compiled_start_shows_the_compile_and_warm_up():
    seen = phases_in_order(COMPILED)
    compile_at = seen.index("compiling the model (torch.compile, in a warm-up run)")
    assert seen.index("loading the model weights") < compile_at
    assert compile_at < seen.index("compiled; finishing the warm-up") < seen.index("warm-up done")
    assert seen.index("warm-up done") < seen.index("allocating the KV cache")


def test_every_phase_a_real_log_reaches_is_one_of_the_table():
    named = {phase for _, phase in phases.PHASES}
    for log in (EAGER, COMPILED):
        assert set(phases_in_order(log)) - {None} <= named


def test_a_log_cut_mid_load_names_the_load():
    """What the progress line says 10 s into a start: the weights are being read."""
    lines = EAGER.read_text(encoding="utf-8").splitlines()
    cut = next(i for i, line in enumerate(lines) if "Starting to load model" in line)
    assert phases.phase_of("\n".join(lines[: cut + 1])) == "downloading or reading the model weights"


@pytest.mark.parametrize("line, phase", [
    (('{"time":"2026-12-02T07:09:40Z","level":"info","logger":"devloop.entrypoint",'
     '"message":"model tiny: generating the offline random-weight model (unless it is cached)"}'),
     "generating the offline tiny model"),
    # vllm/model_executor/model_loader/weight_utils.py, after a download (none offline here)
    (("(Worker pid=7) INFO 12-02 07:10:40 [weight_utils.py:533] Time spent downloading weights for "
     "Qwen/Qwen3-0.6B: 41.2 seconds"), "weights downloaded; loading them"),
    # vllm/compilation/decorators.py, a start that finds the compile cache of an earlier one
    (("(Worker pid=7) INFO 12-02 07:10:40 [decorators.py:319] [backbone] Directly load AOT "
     "compilation from path /models/vllm/torch_compile_cache/x"), "loading the compiled model from its cache"),
])
def test_lines_from_the_source_that_these_logs_do_not_have(line, phase):
    assert phases.phase_of(line) == phase


def test_nothing_logged_is_no_phase(tmp_path):
    assert phases.phase_of("") is None
    assert phases.phase_of_file(tmp_path / "absent.log") is None
    (tmp_path / "empty.log").write_text("")
    assert phases.phase_of_file(tmp_path / "empty.log") is None


def test_a_long_log_is_read_from_its_end(tmp_path):
    log = tmp_path / "long.log"
    log.write_text(EAGER.read_text(encoding="utf-8") + "x" * 1_000_000 + "\n")
    assert phases.phase_of_file(log, tail_bytes=1024) is None  # the tail has no phase line
    with open(log, "a", encoding="utf-8") as out:
        out.write("(EngineCore pid=1) INFO 12-02 07:09:55 [kv_cache_utils.py:2327] CPU KV cache "
                  "size: 2,097,152 tokens\n")
    assert phases.phase_of_file(log, tail_bytes=1024) == "allocating the KV cache"
