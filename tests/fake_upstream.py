"""A controllable OpenAI-compatible upstream for fault injection: run as
``python -m tests.fake_upstream PORT``.  The requested ``model`` picks the behaviour:

    ok            a short answer (streamed or not)
    429-N         429 with Retry-After: 1 for the first N requests, then ok
    500-N         500 for the first N requests, then ok
    500           always 500
    hang          never answers
    reset         closes the connection without a response
    midstream     streams two chunks, then drops the connection
    ctx           400 context_length_exceeded (the prompt is too long for the model)
    bad           400 invalid_request_error about a parameter
    verbose       500 with a long body holding a traceback, a file path and a secret-looking token
    slow          answers after 1 s
    deaf          answers "upstream ok" whatever the request asks (tools, response_format, logprobs ignored)

Any answering model answers as OpenAI does to the fields beyond sampling: ``tools`` -> a call of the
tool ``tool_choice`` names (else the first one), with arguments that fill the tool's ``parameters``
schema, ``finish_reason: "tool_calls"`` (streamed: the call split over several chunks), or text that
quotes the tool result when the last turn is a ``tool`` message; ``response_format`` json_schema -> a
JSON document that validates against the schema (json_object -> a small object); ``logprobs`` ->
per-token logprobs with ``top_logprobs`` alternatives. GET answers the counts and each model's last
request body, so tests can check what the gateway sent.

A request to ``/v1/completions`` with a ``prompt`` and model ``ok`` is answered as OpenAI's legacy
endpoint does: text "upstream ok" (after the prompt with ``echo``), ``logprobs`` per word (-0.5 each, the
first echoed one null), streamed as ``text_completion`` chunks when asked.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN: Counter = Counter()
LAST: dict[str, dict] = {}


def chunk(text: str, finish=None, calls=None, logprobs=None) -> bytes:
    delta = {"content": text} if text else {}
    if calls:
        delta["tool_calls"] = calls
    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                         "logprobs": {"content": logprobs} if logprobs else None}]}
    return f"data: {json.dumps(body)}\n\n".encode()


def legacy_logprobs(echoed: list[str], words: list[str], prompt_len: int, n) -> dict | None:
    """OpenAI's legacy logprobs object: -0.5 per token, the first echoed token null."""
    if n is None:
        return None
    tokens = echoed + words
    values = [None if echoed and i == 0 else -0.5 for i in range(len(tokens))]
    offsets, at = [], 0 if echoed else prompt_len
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {"tokens": tokens, "token_logprobs": values, "text_offset": offsets,
            "top_logprobs": [None if v is None else {t: v} for t, v in zip(tokens, values)]}


def sample(schema: dict):
    """A value that validates against a (simple) JSON Schema: the first enum value, every property."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {k: sample(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [sample(schema.get("items", {}))]
    return {"integer": 42, "number": 1.5, "boolean": True, "null": None}.get(kind, "upstream ok")


def answer(req: dict) -> tuple[str, list | None, str]:
    """(text, whole tool calls or None, finish_reason) for a request, as OpenAI would shape them."""
    if req.get("model") == "deaf":
        return "upstream ok", None, "stop"
    tools, choice, last = req.get("tools"), req.get("tool_choice", "auto"), req["messages"][-1]
    if tools and choice != "none" and not (last["role"] == "tool" and choice != "required"):
        name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
        tool = next(t for t in tools if t["function"]["name"] == name)
        args = json.dumps(sample(tool["function"].get("parameters") or {"type": "object"}))
        return "", [{"id": "call_" + name, "type": "function", "function": {"name": name, "arguments": args}}], \
            "tool_calls"
    if last["role"] == "tool":
        return f"the tool said: {last['content']}", None, "stop"
    fmt = (req.get("response_format") or {}).get("type")
    if fmt == "json_schema":
        return json.dumps(sample(req["response_format"]["json_schema"]["schema"])), None, "stop"
    if fmt == "json_object":
        return json.dumps({"answer": "upstream ok"}), None, "stop"
    return "upstream ok", None, "stop"


def token_logprobs(text: str, top: int) -> list[dict]:
    """OpenAI's logprobs.content entries, one per word-ish token of ``text``."""
    return [{"token": t, "logprob": -0.25 * (i + 1), "bytes": list(t.encode()),
             "top_logprobs": [{"token": t if j == 0 else f"{t}~{j}", "logprob": -0.25 * (i + 1) - j,
                               "bytes": list((t if j == 0 else f"{t}~{j}").encode())} for j in range(top)]}
            for i, t in enumerate(tokens(text))]


def tokens(text: str) -> list[str]:
    """``"upstream ok"`` as ``["upstream", " ok"]``: a word and the space before it make a token."""
    return [t for t in text.replace(" ", "\0 ").split("\0") if t]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        """Cut the TCP connection now (close() alone leaves it open behind rfile/wfile)."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self):
        self._json(200, {"seen": dict(SEEN), "last": LAST})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        model = req.get("model", "ok")
        SEEN[model] += 1
        LAST[model] = req
        kind, _, count = model.partition("-")
        failing = not count or SEEN[model] <= int(count)
        if kind == "429" and failing:
            return self._json(429, {"error": {"message": "slow down"}}, {"retry-after": "1"})
        if kind == "500" and failing:
            return self._json(500, {"error": {"message": "boom"}})
        if kind == "ctx":
            return self._json(400, {"error": {"message": "This model's maximum context length is 2048 tokens. "
                                              "However, you requested 9000 tokens.", "type": "invalid_request_error",
                                              "code": "context_length_exceeded"}})
        if kind == "bad":
            return self._json(400, {"error": {"message": "temperature: unsupported value", "code": None}})
        if kind == "verbose":
            return self._json(500, {"error": {"message": "Traceback (most recent call last):\n  File "
                                              "\"/srv/upstream/app.py\", line 12\n" + "x" * 5000
                                              + " token=sk-upstream-secret"}})
        if kind == "slow":
            time.sleep(1)
        if kind == "hang":
            time.sleep(3600)
        if kind == "reset":
            return self._drop()
        if self.path.endswith("/v1/completions") and "prompt" in req and kind == "ok":
            return self._text_completion(req)
        if "messages" not in req:   # a completion-style expert's /completions request
            req["messages"] = [{"role": "user", "content": req.get("prompt", "")}]
        text, calls, finish = answer(req)
        asked = req.get("logprobs") and kind != "deaf"
        logprobs = token_logprobs(text, req.get("top_logprobs") or 0) if asked else None
        if req.get("stream"):
            return self._stream(kind == "midstream", text, calls, finish, logprobs)
        self._json(200, {"id": "x", "object": "chat.completion", "created": 0, "model": model,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text or None,
                                                              **({"tool_calls": calls} if calls else {})},
                                      "logprobs": {"content": logprobs} if logprobs else None,
                                      "finish_reason": finish}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    def _text_completion(self, req: dict) -> None:
        prompt = req["prompt"] if isinstance(req["prompt"], str) else "".join(map(str, req["prompt"]))
        words = ["upstream", " ok"][: req.get("max_tokens", 16)]
        echoed = [w if i == 0 else " " + w for i, w in enumerate(prompt.split(" "))] if req.get("echo") else []
        choices = [{"index": 0, "text": "".join(echoed + words), "finish_reason": "stop",
                    "logprobs": legacy_logprobs(echoed, words, len(prompt), req.get("logprobs"))}]
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words),
                 "total_tokens": len(prompt.split()) + len(words)}
        body = {"id": "cmpl-x", "object": "text_completion", "created": 0, "model": "ok", "choices": choices}
        if not req.get("stream"):
            return self._json(200, {**body, "usage": usage})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for event in ({**body}, {**body, "choices": [], "usage": usage}):
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def _stream(self, break_midway: bool, text: str, calls, finish: str, logprobs) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for data in self._pieces(break_midway, text, calls, logprobs):
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        if break_midway:
            return self._drop()
        for data in (chunk("", finish), b"data: [DONE]\n\n"):
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _pieces(break_midway: bool, text: str, calls, logprobs):
        """The SSE chunks before the last: text a token at a time (with its logprobs); each tool call
        as OpenAI streams it: id, type and name first, then the arguments in pieces."""
        if break_midway:
            yield from (chunk("upstream"), chunk(" partial"))
            return
        for i, token in enumerate(tokens(text)):
            yield chunk(token, logprobs=logprobs[i: i + 1] if logprobs else None)
        for i, call in enumerate(calls or ()):
            fn = call["function"]
            yield chunk("", calls=[{"index": i, "id": call["id"], "type": "function",
                                    "function": {"name": fn["name"], "arguments": ""}}])
            args = fn["arguments"]
            for part in (args[: len(args) // 2], args[len(args) // 2:]):
                yield chunk("", calls=[{"index": i, "function": {"arguments": part}}])


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
