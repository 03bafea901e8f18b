"""Where an expert may send traffic: refuse ``file://``, link-local and cloud-metadata endpoints.

Checked when an expert is registered (CLI or admin HTTP route), never from
request fields: clients cannot name an upstream at all; and again when a client
connects (``service/backends``: the lean client's resolver drops unsafe addresses
and connects to the address it checked, so DNS rebinding cannot reach them).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from .errors import PermissionDenied, ValidationFailed

METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.azure.internal", "instance-data",
                  "instance-data.ec2.internal"}
METADATA_IPS = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                ipaddress.ip_address("100.100.100.200")}


NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
WILDCARD_DNS = re.compile(r"^(?:.*?[.-])?(\d{1,3}[.-]\d{1,3}[.-]\d{1,3}[.-]\d{1,3})\.(?:nip\.io|sslip\.io|xip\.io)$")


def embedded_ipv4(ip: ipaddress._BaseAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible
    (``::a.b.c.d``), 6to4 (``2002::/16``), Teredo (``2001::/32``, server and client) and NAT64."""
    if ip.version != 6:
        return []
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo:
        found.extend(ip.teredo)
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in net for net in NAT64) or (int(ip) >> 32 == 0 and int(ip) > 1):
        found.append(low)
    return found


def unsafe_ip(ip: ipaddress._BaseAddress) -> bool:
    """Link-local, cloud metadata, multicast or unspecified: itself or an IPv4 address it embeds."""
    return any(a.is_link_local or a in METADATA_IPS or a.is_multicast or a.is_unspecified
               for a in [ip, *embedded_ipv4(ip)])


def parse_ip(text: str) -> ipaddress._BaseAddress | None:
    try:
        return ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None


def resolve_host(host: str) -> list[ipaddress._BaseAddress]:
    """The addresses ``host`` resolves to now (the system resolver); [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [ip for ip in (parse_ip(info[4][0]) for info in infos) if ip is not None]


def _addresses(host: str, resolve) -> list[ipaddress._BaseAddress]:
    ip = parse_ip(host)
    if ip is not None:
        return [ip]
    found = []
    if m := WILDCARD_DNS.match(host):   # 169.254.169.254.nip.io resolves to what it spells
        found.extend(a for a in [parse_ip(m.group(1).replace("-", "."))] if a is not None)
    return found + list(resolve(host))


def check_upstream(url: str | None, allow_unsafe: bool = False, resolve=resolve_host) -> None:
    """Raise ValidationFailed when ``url`` points somewhere an expert must not (unless allowed). A host
    name is resolved now (``resolve``); the HTTP clients check the addresses again when they connect."""
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
    if host in METADATA_HOSTS or any(unsafe_ip(ip) for ip in _addresses(host, resolve)):
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
