"""OpenAI-compatible experts through a lean async HTTP client: one pooled aiohttp session.

litellm spends milliseconds of CPU on every call (request translation, response objects, callbacks),
so experts whose litellm model string names an OpenAI-compatible server at an ``api_base``
(``openai/NAME``, ``hosted_vllm/NAME``, ...: :func:`lean_eligible`) are called with this client
instead, unless ``CONCLAVE_LEAN_CLIENT=0``; every other litellm expert keeps litellm's translation.
Failures mean what they mean on the litellm path: 429, 5xx and broken connections are retryable
UpstreamErrors (with the upstream's Retry-After), other 4xx are not, running out of time is
ExpertTimeout, and the API key (read from the variable the record names) never appears in a message.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import socket
from functools import lru_cache

from experts_registry.errors import (ConclaveError, ContextLengthExceeded, ExpertTimeout, InvalidRequest,
                                     UpstreamError)
from experts_registry.model import Expert
from experts_registry.upstream import parse_ip, unsafe_ip

from ..core.backend import Delta, GenParams, looks_like_context_overflow, scrub, summary, usage_dict
from ..core.completions import from_legacy, raw_fields
from ..core.openai_fields import choice_logprobs, indexed_calls, stream_calls, upstream_body
from ..core.prompting import completion_prompt, native_messages

log = logging.getLogger("conclave.upstream")
_UNSPECIFIED = ipaddress.ip_address("0.0.0.0")   # what an unparsable resolver answer counts as: refused
CLIENT_STATUSES = (400, 413, 422)   # an upstream's verdict on the request itself

# litellm providers that speak the OpenAI wire format to whatever server api_base names
LEAN_PROVIDERS = ("openai", "hosted_vllm", "custom_openai", "lm_studio", "llamafile")


def lean_eligible(expert: Expert) -> bool:
    """True for a litellm expert ``PROVIDER/NAME`` with an ``api_base``, PROVIDER one of LEAN_PROVIDERS."""
    provider, _, name = expert.model.partition("/")
    return expert.backend == "litellm" and bool(expert.api_base) and bool(name) and provider in LEAN_PROVIDERS


def build_request(expert: Expert, messages: list[dict], params: GenParams) -> tuple[str, dict]:
    """The URL and JSON body litellm would send for this expert (chat or completion style)."""
    base = expert.api_base.rstrip("/")
    body = {"model": expert.model.partition("/")[2], "stream": params.stream, **upstream_body(expert, params)}
    if params.raw:   # /v1/completions: the client's prompt verbatim, echo and logprobs passed through
        return base + "/completions", {**body, **raw_fields(messages, params)}
    if expert.prompt_style == "completion":
        return base + "/completions", {**body, "prompt": completion_prompt(expert, messages)}
    body["messages"] = native_messages(expert, messages)
    if params.stream:
        body["stream_options"] = {"include_usage": True}
    return base + "/chat/completions", body


def safe_resolver(inner=None, allow_unsafe: bool = False):
    """An aiohttp resolver that resolves through ``inner`` (default: the system's, in a thread) and drops
    link-local / metadata addresses (``experts_registry.upstream.unsafe_ip``), so the connection goes to
    an address that was checked: a DNS answer that changes after registration (rebinding) cannot reach
    them. A host with nothing else left is refused."""
    import aiohttp
    from aiohttp.abc import AbstractResolver

    class SafeResolver(AbstractResolver):
        def __init__(self):
            self.inner = inner or aiohttp.ThreadedResolver()

        async def resolve(self, host, port=0, family=socket.AF_INET):
            found = await self.inner.resolve(host, port, family)
            if allow_unsafe:
                return found
            safe = [r for r in found if not unsafe_ip(parse_ip(r["host"]) or _UNSPECIFIED)]
            if not safe:
                raise OSError(errno.EACCES, f"{host} resolves only to link-local or cloud-metadata addresses: refused "
                              "(CONCLAVE_ALLOW_UNSAFE_UPSTREAMS=1 allows it deliberately)")
            return safe

        async def close(self):
            await self.inner.close()

    return SafeResolver()


class OpenAIBackend:
    def __init__(self, timeout: float = 120.0, allow_unsafe: bool = False, resolver=None):
        self.timeout = timeout
        self.allow_unsafe = allow_unsafe
        self.resolver = resolver   # the inner resolver (tests inject one: there is no public DNS here)
        self._session = None
        self._closer: asyncio.Task | None = None

    def _client(self):
        """The pooled session of the running event loop: made on first use, closed with its loop
        (tests run several loops one after the other; a server runs one)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._closer.get_loop() is not loop:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=30, ttl_dns_cache=300,
                                               resolver=safe_resolver(self.resolver, self.allow_unsafe)),
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=min(10.0, self.timeout)),
                cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",))
            self._closer = loop.create_task(_close_with_loop(self._session))
        return self._session

    async def stream(self, expert: Expert, messages: list[dict], params: GenParams):
        import aiohttp

        url, body = build_request(expert, messages, params)
        url = _url(url)
        if not self.allow_unsafe and _unsafe_literal(url.host):   # an IP literal is never resolved
            raise UpstreamError(f"expert {expert.name!r}: its api_base is a link-local or cloud-metadata "
                                "address: refused", expert=expert.name)
        headers = {"content-type": "application/json"}
        key = os.environ.get(expert.api_key_env, "") if expert.api_key_env else ""
        if key:
            headers["authorization"] = f"Bearer {key}"
        try:
            async with self._client().post(url, data=json.dumps(body), headers=headers) as resp:
                if resp.status >= 400:
                    raise await _http_error(expert, resp)
                if params.stream:
                    async for delta in _events(expert, resp, params.raw):
                        yield delta
                else:
                    yield _whole(json.loads(await resp.read()), params.raw)
        except ConclaveError:
            raise
        except asyncio.TimeoutError:   # aiohttp's ServerTimeoutError is one too
            raise ExpertTimeout(f"expert {expert.name!r} timed out", expert=expert.name) from None
        except aiohttp.ClientError as exc:   # refused, reset, cut mid-stream: worth another try
            raise UpstreamError(f"expert {expert.name!r} failed: {type(exc).__name__}: "
                                f"{scrub(str(exc), expert)}", expert=expert.name, retryable=True) from None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"expert {expert.name!r} sent a malformed response: {type(exc).__name__}: "
                                f"{scrub(str(exc), expert)}", expert=expert.name) from None

    async def close(self) -> None:
        if self._session is not None and self._closer.get_loop() is asyncio.get_running_loop():
            self._closer.cancel()
            await self._session.close()
        self._session = None


async def _close_with_loop(session) -> None:
    """Close ``session`` when its event loop ends (asyncio.run cancels every pending task then)."""
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await session.close()


@lru_cache(maxsize=1024)
def _unsafe_literal(host: str | None) -> bool:
    ip = parse_ip((host or "").strip("[]"))
    return ip is not None and unsafe_ip(ip)


@lru_cache(maxsize=1024)
def _url(url: str):
    """The parsed URL, once per endpoint (aiohttp would parse the string on every request)."""
    from yarl import URL

    return URL(url)


async def _http_error(expert: Expert, resp) -> ConclaveError:
    """An upstream's HTTP error: the caller's own mistake (400, 413, 422: a 4xx here too, never counted
    against the expert) or the expert's failure (502; 429 and 5xx retryable). The caller sees a short
    summary; the server log keeps the whole body."""
    raw = (await resp.read()).decode("utf-8", "replace")
    text, code = raw, None
    try:
        err = json.loads(raw)["error"]
        text, code = err["message"], err.get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    log.warning("expert %s answered HTTP %s: %s", expert.name, resp.status, scrub(raw, expert)[:4000])
    short = summary(str(text), expert)
    if resp.status in CLIENT_STATUSES:
        return client_error(expert, resp.status, code, short)
    retryable = resp.status == 429 or resp.status >= 500
    return UpstreamError(f"expert {expert.name!r} failed: HTTP {resp.status}: {short}",
                         expert=expert.name, retryable=retryable,
                         retry_after=_seconds(resp.headers.get("retry-after")) if retryable else None)


def client_error(expert: Expert, status: int, code: object, short: str) -> ConclaveError:
    """The upstream refused the request itself (not the gateway's key or the expert's health)."""
    if looks_like_context_overflow(code, short):
        return ContextLengthExceeded(f"expert {expert.name!r}: {short}", expert=expert.name)
    return InvalidRequest(f"expert {expert.name!r} refused the request (HTTP {status}): {short}",
                          code="upstream_rejected_request")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None   # an HTTP date: fall back to the gateway's own backoff


def _usage(u: dict | None) -> dict | None:
    if not u:
        return None
    return usage_dict(u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0)


def _whole(obj: dict, legacy: bool = False) -> Delta:
    """The one Delta of a whole answer; ``legacy``: a /completions answer, whose logprobs are kept."""
    choice = obj["choices"][0]
    if legacy:
        text = choice.get("text") or ""
        return Delta(text, choice.get("finish_reason") or "stop", _usage(obj.get("usage")) or usage_dict(0, 0),
                     logprobs=from_legacy(choice.get("logprobs")))
    message = choice.get("message") or {}
    text = message.get("content") or choice.get("text") or ""
    return Delta(text, choice.get("finish_reason") or "stop", _usage(obj.get("usage")) or usage_dict(0, 0),
                 indexed_calls(message.get("tool_calls")), choice_logprobs(choice))


async def _events(expert: Expert, resp, legacy: bool = False):
    """Deltas from an SSE body (``data: {...}`` lines, then ``data: [DONE]``); the last carries
    finish_reason and usage. An in-band error event is an UpstreamError."""
    finish, usage = "stop", None
    async for line in resp.content:
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        event = json.loads(data)
        if event.get("error"):
            err = event["error"]
            raise UpstreamError(f"expert {expert.name!r} failed mid-stream: "
                                f"{scrub(str(err.get('message', err) if isinstance(err, dict) else err), expert)}",
                                expert=expert.name)
        usage = _usage(event.get("usage")) or usage
        for choice in (event.get("choices") or ())[:1]:
            finish = choice.get("finish_reason") or finish
            if legacy:
                text, calls, logprobs = choice.get("text") or "", None, from_legacy(choice.get("logprobs"))
            else:
                delta = choice.get("delta") or {}
                text = delta.get("content") or choice.get("text") or ""
                calls, logprobs = stream_calls(delta.get("tool_calls")), choice_logprobs(choice)
            if text or calls or logprobs:
                yield Delta(text, tool_calls=calls, logprobs=logprobs)
    yield Delta("", finish, usage or usage_dict(0, 0))
