"""Registration refuses endpoints that would make the gateway an SSRF proxy."""

import pytest

from experts_registry.errors import ValidationFailed
from experts_registry.upstream import check_upstream


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "gopher://x", "http://169.254.169.254/latest/meta-data", "http://[fe80::1]:80/v1",
    "http://metadata.google.internal/computeMetadata/v1", "http://169.254.10.10:8000/v1", "http:///v1",
    "http://[fd00:ec2::254]/", "http://0.0.0.0:8000/v1",
])
def test_unsafe_upstreams_are_refused(url):
    with pytest.raises(ValidationFailed) as err:
        check_upstream(url)
    assert err.value.param == "api_base"


@pytest.mark.parametrize("url", [None, "http://127.0.0.1:8000/v1", "https://api.openai.com/v1",
                                 "http://10.0.0.5:8000/v1", "http://gpu-box.internal.example:8000/v1"])
def test_ordinary_upstreams_pass(url):
    check_upstream(url)


def test_unsafe_upstream_allowed_when_configured():
    check_upstream("http://169.254.169.254/", allow_unsafe=True)
