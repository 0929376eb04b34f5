"""llama.cpp settings (engine/llamacpp/settings.py): llama-server ignores unknown keys and
false flag words without a word, so devloop refuses them, with what to write instead."""

from __future__ import annotations

import re
import subprocess

import pytest

from devloop.engine.llamacpp import binary, settings
from devloop.engine.llamacpp.server_env import SERVER_ENV

VALID = {
    "LLAMA_ARG_HF_REPO": "bartowski/deepseek-ai_DeepSeek-R1-0528-Qwen3-8B-GGUF:Q4_K_M",
    "LLAMA_ARG_CTX_SIZE": "4096", "LLAMA_ARG_N_PARALLEL": "2", "LLAMA_ARG_THREADS": "2",
    "LLAMA_ARG_PORT": "8000", "LLAMA_ARG_ENDPOINT_METRICS": "true", "LLAMA_ARG_JINJA": "true",
    "LLAMA_ARG_THINK": "deepseek", "LLAMA_CACHE": "/models/llama.cpp",
}


def test_the_overlays_settings_pass():
    config = settings.check(VALID)
    assert (config.ctx_size, config.parallel, config.reasoning_format) == (4096, 2, "deepseek")
    assert config.model_key == "LLAMA_ARG_HF_REPO"


def test_a_typo_is_refused_with_a_did_you_mean_and_the_list():
    with pytest.raises(settings.ConfigError) as raised:
        settings.check({**VALID, "LLAMA_ARG_CTX_SIZ": "8192"})
    message = str(raised.value)
    assert "unknown key LLAMA_ARG_CTX_SIZ (did you mean LLAMA_ARG_CTX_SIZE?)" in message
    assert "llama-server --help" in message


def test_every_problem_is_listed_at_once():
    bad = {**VALID, "LLAMA_ARG_N_PARALLEL": "0", "LLAMA_ARG_THINK": "deepseek_r1",
           "LLAMA_ARG_JINJA": "yes", "LLAMA_ARG_CTX_SIZE": "lots", "LLAMA_ARG_MODEL": "/m/x.bin"}
    with pytest.raises(settings.ConfigError) as raised:
        settings.check(bad)
    message = str(raised.value)
    for expected in ("LLAMA_ARG_N_PARALLEL=0 is out of range", "LLAMA_ARG_THINK='deepseek_r1'",
                     "LLAMA_ARG_JINJA='yes'", "LLAMA_ARG_CTX_SIZE='lots' is not an integer",
                     "LLAMA_ARG_MODEL and LLAMA_ARG_HF_REPO are both set", "not a .gguf file"):
        assert expected in message


@pytest.mark.parametrize("value", ["false", "off", "", "0"])
def test_metrics_off_is_refused_because_it_is_scraped(value):
    with pytest.raises(settings.ConfigError, match="LLAMA_ARG_ENDPOINT_METRICS must be true"):
        settings.check({**VALID, "LLAMA_ARG_ENDPOINT_METRICS": value})


def test_a_model_is_required_and_the_hub_form_checked():
    without = {k: v for k, v in VALID.items() if k != "LLAMA_ARG_HF_REPO"}
    with pytest.raises(settings.ConfigError, match="no model: set one of LLAMA_ARG_MODEL"):
        settings.check(without)
    with pytest.raises(settings.ConfigError, match="is not owner/name"):
        settings.check({**VALID, "LLAMA_ARG_HF_REPO": "just-a-name"})


def test_too_small_a_context_for_the_slots_is_refused():
    with pytest.raises(settings.ConfigError, match="leaves 16 tokens to each of 4 slots"):
        settings.check({**VALID, "LLAMA_ARG_CTX_SIZE": "64", "LLAMA_ARG_N_PARALLEL": "4"})


def test_the_key_table_is_what_the_built_llama_server_reads():
    if binary.available():
        pytest.skip(binary.available())
    help_text = subprocess.run([str(binary.find_server()), "--help"], capture_output=True,
                               text=True, timeout=60, check=False).stdout
    assert set(re.findall(r"env: (LLAMA_ARG_[A-Z0-9_]+)", help_text)) == SERVER_ENV


def test_a_load_mode_llama_server_does_not_know_is_refused_before_it_starts():
    with pytest.raises(settings.ConfigError,
                       match=r"LLAMA_ARG_LOAD_MODE='mapped' \(--load-mode\) is not one of auto, none"):
        settings.check({**VALID, "LLAMA_ARG_LOAD_MODE": "mapped"})
    settings.check({**VALID, "LLAMA_ARG_LOAD_MODE": "none"})  # the gguf overlay's


def test_the_load_modes_are_the_ones_the_built_llama_server_lists():
    import re
    import subprocess

    from devloop.engine.llamacpp import binary

    if binary.available():
        pytest.skip(binary.available())
    help_text = subprocess.run([str(binary.find_server()), "--help"], capture_output=True,
                               text=True, timeout=60, check=False).stdout
    section = help_text.split("--load-mode", 1)[1].split("\n-", 1)[0]
    assert tuple(re.findall(r"^\s+- ([a-z+]+):", section, re.MULTILINE)) == settings.LOAD_MODES
