"""`conclave serve` keeps idle client connections open for CONCLAVE_KEEPALIVE_SECONDS (75 by default,
longer than clients' and load balancers' idle timeouts), so the client closes first: a server-side
close racing a reused connection is a reset the client sees as a failed request."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

from .servers import running_gateway

pytestmark = pytest.mark.real


def _response(s: socket.socket) -> bytes:
    """One whole HTTP response (headers and a Content-Length body, which may come in several reads);
    b"" when the server closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            return b""
        body += chunk
    return head + b"\r\n\r\n" + body


def _idle_then_probe(base: str, idle: float) -> bytes:
    """One request on a raw connection, ``idle`` seconds of silence, then a second request: what came back."""
    u = urlsplit(base)
    req = f"GET /health HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode()
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(req)
        assert b"200 OK" in _response(s)
        time.sleep(idle)
        try:
            s.sendall(req)
            return _response(s)
        except (ConnectionResetError, BrokenPipeError):
            return b""


def test_idle_connection_outlives_uvicorns_five_second_default(tmp_path):
    with running_gateway(tmp_path / "home", tmp_path / "server.log") as base:
        assert b"200 OK" in _idle_then_probe(base, 6.5)


def test_keepalive_is_configurable(tmp_path):
    with running_gateway(tmp_path / "home", tmp_path / "server.log", CONCLAVE_KEEPALIVE_SECONDS="1") as base:
        assert _idle_then_probe(base, 2.5) == b""   # the server closed it
