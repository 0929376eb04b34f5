"""The e2e suite straight against llama-server (conftest.py: fixtures, known deviations)."""

import pytest

from tests.e2e.test_chat import *
from tests.e2e.test_completions import *
from tests.e2e.test_errors import *
from tests.e2e.test_health_and_models import *
from tests.e2e.test_openai_client import *

pytestmark = pytest.mark.llamacpp
