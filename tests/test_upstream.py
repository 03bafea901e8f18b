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


@pytest.mark.parametrize("url", [
    "http://[::ffff:169.254.169.254]/", "http://[::ffff:a9fe:a9fe]/", "http://[::ffff:100.100.100.200]/",
    "http://[2002:a9fe:a9fe::1]/",                          # 6to4 carrying 169.254.169.254
    "http://[64:ff9b::a9fe:a9fe]/",                         # NAT64 of it
    "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",       # Teredo, client 169.254.169.254 (obfuscated)
    "http://[::169.254.169.254]/",                          # IPv4-compatible
    "http://169.254.169.254.nip.io/", "http://app-169-254-169-254.sslip.io/",
    "http://2852039166/", "http://0xa9fea9fe/", "http://0251.0376.0251.0376/",   # decimal, hex, octal
])
def test_embedded_and_disguised_metadata_addresses_are_refused(url):
    with pytest.raises(ValidationFailed):
        check_upstream(url)


def test_a_host_name_is_resolved_at_registration():
    from ipaddress import ip_address

    with pytest.raises(ValidationFailed):
        check_upstream("http://innocent.example/v1", resolve=lambda host: [ip_address("169.254.169.254")])
    with pytest.raises(ValidationFailed):
        check_upstream("http://innocent.example/v1", resolve=lambda host: [ip_address("::ffff:a9fe:a9fe")])
    check_upstream("http://innocent.example/v1", resolve=lambda host: [ip_address("10.1.2.3")])
