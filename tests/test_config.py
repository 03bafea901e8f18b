"""Settings from CONCLAVE_* environment variables."""

import pytest

from experts_registry.errors import ConfigError
from service.core.config import load_settings


def test_settings_from_environment_and_bad_values():
    s = load_settings({"CONCLAVE_HOME": "/tmp/x", "CONCLAVE_API_KEYS": "a, b,,", "CONCLAVE_EXPERT_TIMEOUT": "2.5",
                       "CONCLAVE_LLAMA_THREADS": "1"})
    assert s.api_keys == frozenset({"a", "b"}) and s.expert_timeout == 2.5 and s.llama_threads == 1
    with pytest.raises(ConfigError, match="CONCLAVE_MAX_BODY_BYTES must be an integer"):
        load_settings({"CONCLAVE_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ConfigError, match="CONCLAVE_EXPERT_TIMEOUT must be >= 0.001"):
        load_settings({"CONCLAVE_EXPERT_TIMEOUT": "0"})
