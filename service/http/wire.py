"""Malformed HTTP (a CR inside a header, a bogus method, a negative Content-Length) never reaches the
ASGI app: the HTTP parser inside uvicorn refuses it and uvicorn answers a plain-text 400. This protocol
class changes only that answer, to an OpenAI-style JSON error, on uvicorn's own connection handling
(``conclave serve`` passes it as uvicorn's ``http``)."""

from __future__ import annotations

import json

from experts_registry.errors import InvalidRequest


def error_bytes(reason: str) -> bytes:
    body = json.dumps(InvalidRequest(f"malformed HTTP request ({reason}): check the request line, the headers and "
                                     "Content-Length", code="invalid_http").to_body()).encode()
    head = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-should-retry: false\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n")
    return head + body


def json_errors_protocol():
    """uvicorn's HTTP protocol (httptools when installed, else h11) answering a parse error in JSON."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:   # pragma: no cover - httptools is a dependency of uvicorn[standard]
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class JsonErrorProtocol(Base):
        def send_400_response(self, msg: str) -> None:
            self.transport.write(error_bytes(msg.rstrip(".")))
            self.transport.close()

    return JsonErrorProtocol


def __getattr__(name: str):
    """``service.http.wire:JsonErrorProtocol`` for uvicorn's ``http=`` (a string survives its worker processes)."""
    if name == "JsonErrorProtocol":
        return json_errors_protocol()
    raise AttributeError(name)
