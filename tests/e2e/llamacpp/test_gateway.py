"""The e2e suite through the caching gateway in front of llama-server, as the gguf overlay
serves it (conftest.py: fixtures, known deviations, which the gateway passes through)."""

import pytest

from tests.e2e.test_chat import *
from tests.e2e.test_completions import *
from tests.e2e.test_errors import *
from tests.e2e.test_health_and_models import *
from tests.e2e.test_openai_client import *

pytestmark = pytest.mark.llamacpp


@pytest.fixture(scope="module")
def base_url(llamacpp_gateway: str) -> str:
    return llamacpp_gateway
