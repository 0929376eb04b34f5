"""Why did the vLLM engine die? Read its log and exit code, name the cause, suggest a fix.

vLLM runs as several processes (API server, engine core, workers). When a worker dies, the API
server logs the death, answers the next request with `EngineDeadError` and then exits with code
0, so the server's own exit code says nothing. The cause is in the log lines vLLM writes about
the process that died ("Worker proc VllmWorker-0 died unexpectedly (exit code: -4)"): a negative
exit code is the signal that killed it.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field

from devloop.engine import int4kernel

# vLLM 0.32's messages about a process that died, each with its name and exit code.
_DEATH_PATTERNS = (
    # vllm/v1/executor/multiproc_executor.py
    (re.compile(r"Worker proc (?P<name>\S+) died unexpectedly \(exit code: (?P<code>-?\d+|None)\)"),
     "vLLM worker"),
    # vllm/v1/utils.py (API server manager)
    (re.compile(r"Process (?P<name>\S+) \(PID: \d+\) died with exit code (?P<code>-?\d+)"),
     "vLLM process"),
    # vllm/v1/engine/utils.py: "Failed core proc(s): {'EngineCore_DP0': -9}"
    (re.compile(r"Failed core proc\(s\): \{'(?P<name>[^']+)': (?P<code>-?\d+)"),
     "vLLM engine core"),
)
# Lines worth showing a user: the death itself, native crashes, errors and their exceptions.
_RELEVANT = re.compile(
    r"\bERROR\b|died|Fatal Python error|EngineDeadError|^\w+(Error|Exception): |Killed|"
    r"out of memory"
)
ENGINE_DEAD_MARKERS = ("EngineDeadError", "EngineCore encountered an issue")
# Python's faulthandler (PYTHONFAULTHANDLER=1, set by the entrypoint) writes one of these and the
# Python stack of the process a signal kills: the only record of the signal when vLLM logged the
# death before the exit code was known ("exit code: None").
_FAULTHANDLER = re.compile(
    r"Fatal Python error: (?P<what>Illegal instruction|Segmentation fault|Bus error|Aborted|"
    r"Floating point exception)"
)
_FAULTHANDLER_SIGNALS = {
    "Illegal instruction": signal.SIGILL, "Segmentation fault": signal.SIGSEGV,
    "Bus error": signal.SIGBUS, "Aborted": signal.SIGABRT,
    "Floating point exception": signal.SIGFPE,
}

_SIGNAL_HINTS = {
    signal.SIGILL: (
        "the CPU or kernel refused an instruction. On an Intel AMX CPU (grep amx_tile "
        "/proc/cpuinfo) vLLM's bf16 kernels need the AMX permission that the devloop_amx vLLM "
        "plugin requests: reinstall the project (`pip install -e .`) so its entry point is "
        "registered, keep devloop_amx in VLLM_PLUGINS if you set it, or serve with "
        "`--set DTYPE=float32`"
    ),
    signal.SIGKILL: (
        "usually the kernel's out-of-memory killer (`dmesg | grep -i oom` tells): weights + "
        "VLLM_CPU_KVCACHE_SPACE + runtime exceed the memory available; lower "
        "VLLM_CPU_KVCACHE_SPACE or MAX_NUM_SEQS, or raise the memory limit"
    ),
    signal.SIGBUS: (
        "shared memory ran out: vLLM passes tensors through /dev/shm; give the pod a larger "
        "/dev/shm (emptyDir, medium: Memory) or free space in /dev/shm here"
    ),
    signal.SIGSEGV: (
        "a native crash in vLLM or torch; the log lines above show where; ENFORCE_EAGER=true "
        "or DTYPE=float32 narrows it down"
    ),
    signal.SIGABRT: "a native abort in vLLM or torch; the log lines above show where",
}


@dataclass(frozen=True)
class Diagnosis:
    reason: str  # one line: what died and how
    hint: str  # what to do
    evidence: list[str] = field(default_factory=list)  # the log lines that show it

    def __str__(self) -> str:
        lines = [self.reason, f"hint: {self.hint}"]
        if self.evidence:
            lines.append("log lines:")
            lines += [f"  {line}" for line in self.evidence]
        return "\n".join(lines)


def describe_exit(code: int) -> str:
    """'killed by SIGILL (illegal instruction)' for -4, 'exited with code 1' for 1."""
    if code < 0:
        try:
            sig = signal.Signals(-code)
        except ValueError:
            return f"killed by signal {-code}"
        return f"killed by {sig.name} ({(signal.strsignal(sig) or sig.name).lower()})"
    return f"exited with code {code}"


def _hint_for(code: int) -> str:
    if code < 0:
        try:
            return _SIGNAL_HINTS.get(signal.Signals(-code), "see the log lines above")
        except ValueError:
            pass
    return "see the log lines above for the error"


def relevant_lines(log_text: str, limit: int = 8) -> list[str]:
    """The last `limit` log lines about errors and deaths, without vLLM's huge input dumps."""
    lines = [
        line.strip()[:300] for line in log_text.splitlines()
        if _RELEVANT.search(line) and "Dumping" not in line
    ]
    return lines[-limit:]


def _native_crash(log_text: str) -> tuple[int, list[str]] | None:
    """(-signal, the faulthandler line and the innermost Python frames) of a native crash."""
    match = _FAULTHANDLER.search(log_text)
    if match is None:
        return None
    after = log_text[match.end():].splitlines()
    frames = [line.strip()[:300] for line in after if line.strip().startswith("File ")][:4]
    return -int(_FAULTHANDLER_SIGNALS[match["what"]]), [match.group(0), *frames]


def diagnose(log_text: str, server_exit_code: int | None = None) -> Diagnosis | None:
    """The engine's cause of death from its log and the server's exit code; None when neither
    shows a death (the server is still up and nothing in the log says it failed)."""
    evidence = relevant_lines(log_text)
    native = _native_crash(log_text)
    if native is not None:
        evidence = native[1] + [line for line in evidence if line not in native[1]][-6:]
    if int4kernel.MISSING_KERNEL_MARKER in log_text:
        return Diagnosis("the vLLM engine died: its CPU kernels have no int4 GEMM "
                         "(cpu_gemm_wna16) for this AWQ/GPTQ model on an AVX2-only CPU",
                         int4kernel.FIX, evidence)
    for pattern, kind in _DEATH_PATTERNS:
        match = pattern.search(log_text)  # the first death; later ones are its consequences
        if match is None:
            continue
        code = int(match["code"]) if match["code"] != "None" else (native or (None,))[0]
        how = describe_exit(code) if code is not None else "died (exit code not recorded)"
        hint = _hint_for(code) if code is not None else "see the log lines above"
        return Diagnosis(f"{kind} {match['name']} {how}", hint, evidence)
    if native is not None:
        return Diagnosis(f"a vLLM process was {describe_exit(native[0])}", _hint_for(native[0]),
                         evidence)
    if server_exit_code is not None and server_exit_code < 0:
        return Diagnosis(f"the server {describe_exit(server_exit_code)}",
                         _hint_for(server_exit_code), evidence)
    if server_exit_code is not None and server_exit_code > 0:
        # An error it reported itself (the entrypoint refusing a setting, a Python exception):
        # its message is at the end of the log.
        tail = [line.rstrip()[:300] for line in log_text.splitlines()[-12:]]
        return Diagnosis(f"the server {describe_exit(server_exit_code)}",
                         "see its last log lines", tail)
    if any(marker in log_text for marker in ENGINE_DEAD_MARKERS):
        return Diagnosis("the vLLM engine died (EngineDeadError)",
                         "see the log lines above for its cause", evidence)
    if server_exit_code == 0:
        return Diagnosis("the vLLM server exited (code 0) before it was ready",
                         "see the log lines above", evidence)
    return None
