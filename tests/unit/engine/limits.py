"""A two-CPU container with a 4 GiB limit, and the settings' error text, for the engine's unit
tests."""

from __future__ import annotations

import pytest

from devloop.engine.settings import ConfigError, Limits, load_config

GIB = 1 << 30
TWO_CPUS = Limits(cpus=[0, 1], cpu_limit=2.0, memory_limit=4 * GIB, physical_memory=24 * GIB)


def problems(env: dict[str, str], limits: Limits = TWO_CPUS) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(env, limits)
    return str(raised.value)
