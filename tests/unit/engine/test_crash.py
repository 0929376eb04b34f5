"""Naming why the engine died, from log lines the real vLLM 0.32 wrote.

The excerpts are copied from real server logs on this project's machines (the AMX SIGILL, a
worker killed by a signal before vLLM read its exit code, an engine core the OOM killer ended,
the entrypoint refusing a setting). The same diagnosis runs end to end against a real server
whose worker is killed in tests/integration/engine/test_serve_cli.py.
"""

from __future__ import annotations

import signal

import pytest

from devloop.engine import crash

AMX_CRASH = """\
(APIServer pid=2644) INFO 11-26 13:34:29 [entry.py:140] Starting vLLM server on http://127.0.0.1:18000
INFO:     127.0.0.1:58186 - "GET /v1/models HTTP/1.1" 200 OK
Fatal Python error: Illegal instruction

Thread 0x00007f2a1c7fe6c0 (most recent call first):
  File "/opt/venv/lib/python3.12/site-packages/vllm/_custom_ops.py", line 3377 in cpu_attention_with_kv_cache
  File "/opt/venv/lib/python3.12/site-packages/vllm/v1/attention/backends/cpu_attn.py", line 376 in forward
(EngineCore pid=2667) ERROR 11-26 13:34:30 [multiproc_executor.py:315] Worker proc VllmWorker-0 died unexpectedly (exit code: -4), shutting down executor.
(EngineCore pid=2667) ERROR 11-26 13:34:30 [dump_input.py:72] Dumping input data for V1 LLM engine (v0.32.0) with config: model='/m'
(EngineCore pid=2667) ERROR 11-26 13:34:30 [core.py:1512] EngineCore encountered a fatal error.
(EngineCore pid=2667) ERROR 11-26 13:34:30 [core.py:1512] RuntimeError: cancelled
(APIServer pid=2644) ERROR 11-26 13:34:30 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.
INFO:     127.0.0.1:58198 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error
"""

EXIT_CODE_NOT_READ = """\
(APIServer pid=6897) WARNING 11-26 13:39:40 [system_utils.py:255] Found ulimit of 20000 and failed to automatically increase with error current limit exceeds maximum limit. This can cause fd limit errors like `OSError: [Errno 24] Too many open files`.
(EngineCore pid=7028) ERROR 11-26 13:40:56 [multiproc_executor.py:315] Worker proc VllmWorker-0 died unexpectedly (exit code: None), shutting down executor.
(EngineCore pid=7028) ERROR 11-26 13:40:56 [core.py:1512] RuntimeError: Executor failed.
(APIServer pid=6897) ERROR 11-26 13:40:56 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.
"""

OOM_AT_START = """\
(APIServer pid=100) ERROR 11-26 10:00:00 [core_client.py:1] Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_DP0': -9}
"""

SETTING_REFUSED = """\
{"level":"info","logger":"devloop.entrypoint","message":"starting"}
devloop entrypoint: error: invalid engine settings (kustomize/base/engine.env or the overlay's configMapGenerator):
  - CPU_THREADS=999 is more than the CPUs this container may use
"""


def test_the_amx_crash_names_the_worker_the_signal_and_the_fix():
    diagnosis = crash.diagnose(AMX_CRASH, server_exit_code=0)
    assert diagnosis.reason == "vLLM worker VllmWorker-0 killed by SIGILL (illegal instruction)"
    assert "AMX" in diagnosis.hint and "DTYPE=float32" in diagnosis.hint
    assert diagnosis.evidence[0] == "Fatal Python error: Illegal instruction"
    assert "cpu_attention_with_kv_cache" in diagnosis.evidence[1]
    assert not any("Dumping" in line for line in diagnosis.evidence)
    assert "exited with code 0" not in str(diagnosis)


def test_a_death_logged_before_its_exit_code_takes_the_signal_from_faulthandler():
    log = EXIT_CODE_NOT_READ + "Fatal Python error: Segmentation fault\n\n  File \"/x.py\", line 1 in f\n"
    diagnosis = crash.diagnose(log, server_exit_code=0)
    assert diagnosis.reason == "vLLM worker VllmWorker-0 killed by SIGSEGV (segmentation fault)"


def test_a_death_without_any_record_of_its_signal_says_so():
    diagnosis = crash.diagnose(EXIT_CODE_NOT_READ, server_exit_code=0)
    assert diagnosis.reason == "vLLM worker VllmWorker-0 died (exit code not recorded)"
    assert not any("ulimit" in line for line in diagnosis.evidence), "a warning is not evidence"


def test_an_engine_core_killed_at_start_points_at_memory():
    diagnosis = crash.diagnose(OOM_AT_START, server_exit_code=1)
    assert diagnosis.reason == "vLLM engine core EngineCore_DP0 killed by SIGKILL (killed)"
    assert "VLLM_CPU_KVCACHE_SPACE" in diagnosis.hint


def test_an_error_the_server_reported_itself_shows_the_end_of_the_log():
    diagnosis = crash.diagnose(SETTING_REFUSED, server_exit_code=2)
    assert diagnosis.reason == "the server exited with code 2"
    assert any("CPU_THREADS=999" in line for line in diagnosis.evidence)


def test_a_server_still_running_without_errors_has_no_diagnosis():
    assert crash.diagnose("(APIServer pid=1) INFO starting\n", server_exit_code=None) is None


@pytest.mark.parametrize("code, text", [
    (-signal.SIGILL, "killed by SIGILL (illegal instruction)"),
    (-signal.SIGBUS, "killed by SIGBUS (bus error)"),
    (3, "exited with code 3"),
    (-200, "killed by signal 200"),
])
def test_exit_codes_read_as_signals_or_codes(code, text):
    assert crash.describe_exit(code) == text
