"""Intel AMX tile permission for vLLM's processes, and what to do when the kernel refuses it.

On x86-64 Linux a process may execute AMX tile instructions only after asking the kernel for the
extra register state: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`. The permission
belongs to the process, is inherited across fork and is cleared by execve. A process that runs an
AMX instruction without it is killed with SIGILL.

vLLM's CPU kernels pick their AMX code paths (bf16 attention, small-GEMM kernels) whenever
`torch.cpu._is_amx_tile_supported()` is true, which reads CPUID only; nothing in vLLM 0.32 asks
for the permission. oneDNN asks for itself before its own AMX matmuls, so a big model can hide the
bug by luck; the tiny model's first bf16 attention call kills the worker.

So `vllm_plugin` is registered in pyproject.toml under vLLM's `vllm.general_plugins` entry-point
group, which vLLM loads in every one of its processes (API server, engine core, each worker,
spawned or forked) before any model code runs (vllm/plugins/__init__.py). The entrypoint also
asks once in its own process before exec: that tells it whether the kernel grants the permission
at all, and when it does not, it serves in float32, where no AMX path is taken, rather than crash.

This module imports nothing heavy: it runs in every vLLM process.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import logging
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("devloop.amx")

# From the kernel's arch/x86/include/uapi/asm/prctl.h and asm/fpu/types.h.
SYS_ARCH_PRCTL = 158  # x86-64 syscall number
ARCH_GET_XCOMP_SUPP = 0x1021
ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18

CPUINFO = Path("/proc/cpuinfo")
# The entry point's name in pyproject.toml: what VLLM_PLUGINS must list when a user sets it.
PLUGIN_NAME = "devloop_amx"

# A syscall as (number, *args) -> (return value, errno): the real one by default, a recorded one
# in the unit tests that exercise the refusal paths this machine's kernel never takes.
Syscall = Callable[..., tuple[int, int]]


class Permission(enum.Enum):
    NOT_APPLICABLE = "not applicable"  # not x86-64 Linux, or the CPU has no AMX tiles
    GRANTED = "granted"
    REFUSED = "refused"


@dataclass(frozen=True)
class AmxStatus:
    permission: Permission
    detail: str

    @property
    def refused(self) -> bool:
        return self.permission is Permission.REFUSED


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The first CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return set()


def _real_syscall(number: int, *args: int) -> tuple[int, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ulong_args = [ctypes.c_ulong(arg) for arg in args]
    result = libc.syscall(ctypes.c_long(number), *ulong_args)
    return int(result), ctypes.get_errno()


def _is_x86_64_linux() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _xcomp_mask(code: int, syscall: Syscall) -> int | None:
    """The feature bitmask an ARCH_GET_XCOMP_* query returns, or None when it fails."""
    mask = ctypes.c_ulong(0)
    result, _ = syscall(SYS_ARCH_PRCTL, code, ctypes.addressof(mask))
    return mask.value if result == 0 else None


def permission_held(syscall: Syscall | None = None) -> bool:
    """Whether this process may use AMX tiles now (x86-64 Linux only)."""
    mask = _xcomp_mask(ARCH_GET_XCOMP_PERM, syscall or _real_syscall)
    return mask is not None and bool(mask >> XFEATURE_XTILEDATA & 1)


def request_permission(
    flags: set[str] | None = None,
    syscall: Syscall | None = None,
    applicable: bool | None = None,
) -> AmxStatus:
    """Ask the kernel for AMX tile data permission for this process; idempotent.

    The parameters exist for the unit tests: by default the CPU's flags, the real syscall and
    the real platform are used."""
    if applicable is None:
        applicable = _is_x86_64_linux()
    if not applicable:
        return AmxStatus(Permission.NOT_APPLICABLE, f"{platform.machine()} {sys.platform}")
    flags = cpu_flags() if flags is None else flags
    if "amx_tile" not in flags:
        return AmxStatus(Permission.NOT_APPLICABLE, "this CPU has no AMX tiles")
    syscall = syscall or _real_syscall

    supported = _xcomp_mask(ARCH_GET_XCOMP_SUPP, syscall)
    if supported is not None and not supported >> XFEATURE_XTILEDATA & 1:
        return AmxStatus(
            Permission.REFUSED,
            "the kernel does not support AMX tile state (ARCH_GET_XCOMP_SUPP lacks "
            "XTILEDATA; Linux 5.16 or later is needed)",
        )
    result, error = syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    if result != 0:
        reason = {
            errno.EINVAL: "the kernel predates AMX support (Linux 5.16) or disables it",
            errno.ENOSPC: "a thread's sigaltstack is too small for the AMX signal frame",
            errno.EPERM: "a seccomp or security policy forbids it",
        }.get(error, os.strerror(error) if error else "unknown error")
        name = errno.errorcode.get(error, str(error))
        return AmxStatus(Permission.REFUSED,
                         f"arch_prctl(ARCH_REQ_XCOMP_PERM) failed: {name}, {reason}")
    if not permission_held(syscall):
        return AmxStatus(
            Permission.REFUSED,
            "arch_prctl(ARCH_REQ_XCOMP_PERM) returned success but ARCH_GET_XCOMP_PERM does not "
            "list XTILEDATA",
        )
    return AmxStatus(Permission.GRANTED, "AMX tile data permission granted")


def vllm_plugin() -> None:
    """vLLM general plugin (pyproject.toml, entry point group `vllm.general_plugins`).

    Runs in every vLLM process before its kernels; vLLM may call it more than once."""
    status = request_permission()
    if status.refused:
        # The entrypoint already chose float32 when its own request was refused; this only
        # reaches the log when a process is refused what the entrypoint was granted.
        log.warning("AMX permission refused in pid %d (%s): bf16 AMX kernels would crash this "
                    "process; serve with DTYPE=float32", os.getpid(), status.detail)
    else:
        log.debug("AMX tile permission in pid %d: %s", os.getpid(), status.detail)


# DTYPE values for which vLLM's CPU backend may take an AMX path (bf16 and fp16 AMX kernels;
# `auto` becomes bf16 for a bf16 checkpoint). float32 never does.
AMX_DTYPES = ("auto", "bfloat16", "half", "float16")


def safe_dtype(dtype: str, status: AmxStatus) -> str:
    """The dtype to serve with: `dtype`, or float32 when the kernel refused AMX permission and
    `dtype` could take vLLM onto an AMX kernel (which would be killed by SIGILL)."""
    if status.refused and dtype in AMX_DTYPES:
        return "float32"
    return dtype
