"""Where an expert may send traffic: refuse ``file://``, link-local and cloud-metadata endpoints.

Checked when an expert is registered (CLI or admin HTTP route), never from
request fields: clients cannot name an upstream at all.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .errors import PermissionDenied, ValidationFailed

METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.azure.internal", "instance-data",
                  "instance-data.ec2.internal"}
METADATA_IPS = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                ipaddress.ip_address("100.100.100.200")}


def _unsafe_ip(ip: ipaddress._BaseAddress) -> bool:
    return ip.is_link_local or ip in METADATA_IPS or ip.is_multicast or ip.is_unspecified


def _resolve(host: str) -> list[ipaddress._BaseAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # unresolvable now: nothing to judge (a request to it will simply fail)
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def check_upstream(url: str | None, allow_unsafe: bool = False) -> None:
    """Raise ValidationFailed when ``url`` points somewhere an expert must not (unless allowed)."""
    if not url or allow_unsafe:
        return
    parts = urlsplit(url)
    hint = " (set CONCLAVE_ALLOW_UNSAFE_UPSTREAMS=1 to allow it deliberately)"
    if parts.scheme not in ("http", "https"):
        raise ValidationFailed(f"api_base must be an http(s) URL, not {parts.scheme or 'a bare path'!r}" + hint,
                               param="api_base")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise ValidationFailed("api_base has no host", param="api_base")
    if host in METADATA_HOSTS or any(_unsafe_ip(ip) for ip in _resolve(host)):
        raise ValidationFailed(f"api_base {host!r} is a link-local or cloud-metadata address" + hint,
                               param="api_base")


def check_secret_ref(name: str | None, allowed: frozenset[str] | set[str]) -> None:
    """Over HTTP an expert may name only an environment variable the operator listed in
    CONCLAVE_EXPERT_SECRETS, never a CONCLAVE_* one (the gateway would send its value to the expert's
    api_base). The local CLI, run by the operator, does not call this."""
    if not name:
        return
    how = ("register the expert with the local CLI ('conclave experts add ... --api-key-env NAME') or ask the "
           "operator to add the variable to CONCLAVE_EXPERT_SECRETS (a comma-separated list) on the gateway")
    if name.upper().startswith("CONCLAVE_"):
        raise PermissionDenied(f"api_key_env {name!r}: the gateway's own CONCLAVE_* settings are never sent to an "
                               "expert registered over HTTP: " + how, param="api_key_env", code="secret_not_allowed")
    if name not in allowed:
        listed = f"it allows {', '.join(sorted(allowed))}" if allowed else "it is empty, so none is"
        raise PermissionDenied(f"api_key_env {name!r} is not in CONCLAVE_EXPERT_SECRETS ({listed}): " + how,
                               param="api_key_env", code="secret_not_allowed")
