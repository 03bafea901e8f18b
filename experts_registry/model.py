"""The expert record: what the registry stores about one expert LLM."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields

from .errors import ValidationFailed

BACKENDS = ("llamacpp", "litellm", "vllm")
PROMPT_STYLES = ("chat", "completion")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
RESERVED_PREFIX = "conclave-"
DEFAULT_TEMPLATE = "Q: {prompt}\nA:"

# What an expert can serve beyond plain text (docs/configuration.md, "Expert capabilities"):
#   tools        function calling (`tools`, `tool_choice`): the answer may be `tool_calls`
#   json_schema  JSON mode (`response_format` json_object / json_schema)
#   vision       image inputs (`image_url` content parts)
#   logprobs     per-token log probabilities (`logprobs`, `top_logprobs`)
#   reasoning    a reasoning mode the request can set (`reasoning_effort`)
CAPABILITIES = ("tools", "json_schema", "vision", "logprobs", "reasoning")
# Undeclared (capabilities=None), an expert gets its backend's default.  Local workers constrain
# generation with a JSON grammar and read logprobs from the model; they run no tool-call parser and
# render text only.  Remote endpoints (OpenAI-compatible servers) take tools, response_format and
# logprobs (and reasoning_effort) as the OpenAI API does, so the fields pass through and an upstream that
# cannot serve one answers with its own 400; vision is declared, never assumed (most text models reject
# images).  The bundled local models have no reasoning mode.
DEFAULT_CAPABILITIES = {"llamacpp": ("json_schema", "logprobs"), "vllm": ("json_schema", "logprobs"),
                        "litellm": ("tools", "json_schema", "logprobs", "reasoning")}
LOCAL_BACKENDS = ("llamacpp", "vllm")
LOCAL_CANNOT = ("tools", "vision", "reasoning")   # no tool-call parser, text-only prompts, no reasoning mode


@dataclass(frozen=True)
class Expert:
    """One expert LLM.

    ``model`` is a reference the backend understands: for ``llamacpp`` a GGUF
    path or ``bundled:<id>``; for ``litellm`` a litellm model string such as
    ``hosted_vllm/qwen`` or ``openai/gpt-4o-mini``.  Secrets are never stored:
    ``api_key_env`` names the environment variable that holds the key.
    ``vllm`` experts: ``model`` is ``bundled:<id>``, a GGUF file or a Hugging Face model folder
    (config.json + safetensors); ``tensor_parallel_size`` and ``enforce_eager`` shape the engine.
    For ``completion`` experts (base models) each turn is rendered with
    ``template`` and ``system_prompt`` is the preamble placed before the turns
    (instructions or few-shot examples).
    """

    name: str
    backend: str
    model: str
    prompt_style: str = "chat"
    template: str | None = None
    system_prompt: str | None = None
    stop: tuple[str, ...] = ()
    api_base: str | None = None
    api_key_env: str | None = None
    skills: tuple[str, ...] = ()
    params_b: float | None = None
    price_per_mtok: float | None = None
    context_length: int = 2048
    memory_mb: int | None = None
    description: str = ""
    capabilities: tuple[str, ...] | None = None   # None: the backend's default (DEFAULT_CAPABILITIES)
    tensor_parallel_size: int = 1     # vllm: GPUs one engine spans
    enforce_eager: bool = False       # vllm: no CUDA graphs (always so on CPU)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.capabilities is not None:
            if not isinstance(self.capabilities, (list, tuple, set, frozenset)):
                raise ValidationFailed("capabilities is a list, e.g. [\"tools\", \"json_schema\"]",
                                       param="capabilities")
            caps = {str(c).strip().lower() for c in self.capabilities} - {""}
            object.__setattr__(self, "capabilities", tuple(c for c in CAPABILITIES if c in caps)
                               + tuple(sorted(caps - set(CAPABILITIES))))
        object.__setattr__(self, "skills", tuple(s.strip().lower() for s in self.skills if s.strip()))
        validate(self)

    @property
    def completion_template(self) -> str:
        return self.template or DEFAULT_TEMPLATE

    @property
    def supports(self) -> frozenset[str]:
        """What this expert can serve: its declared capabilities, else its backend's default."""
        declared = self.capabilities if self.capabilities is not None else DEFAULT_CAPABILITIES.get(self.backend, ())
        return frozenset(declared)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        d["skills"] = list(self.skills)
        d["capabilities"] = None if self.capabilities is None else list(self.capabilities)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Expert":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationFailed(f"unknown expert field(s): {', '.join(unknown)}", param=unknown[0])
        for req in ("name", "backend", "model"):
            if not data.get(req):
                raise ValidationFailed(f"expert field '{req}' is required", param=req)
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Expert":
        return cls.from_dict(json.loads(text))


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValidationFailed(
            f"invalid expert name {name!r}: use 1-64 characters from lowercase letters, digits, "
            "'-', '_' and '.', starting with a letter or digit", param="name")
    if name.startswith(RESERVED_PREFIX):
        raise ValidationFailed(f"expert names starting with {RESERVED_PREFIX!r} are reserved "
                               "for Conclave's virtual models", param="name")
    return name


def validate(e: Expert) -> None:
    validate_name(e.name)
    _choice("backend", e.backend, BACKENDS)
    _choice("prompt_style", e.prompt_style, PROMPT_STYLES)
    if e.template is not None and "{prompt}" not in e.template:
        raise ValidationFailed("template must contain the placeholder {prompt}", param="template")
    if e.backend == "litellm" and e.api_key_env and not re.match(r"^[A-Z_][A-Z0-9_]*$", e.api_key_env):
        raise ValidationFailed("api_key_env must name an environment variable (e.g. OPENAI_API_KEY), "
                               "never the key itself", param="api_key_env")
    for attr in ("params_b", "price_per_mtok", "memory_mb"):
        value = getattr(e, attr)
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise ValidationFailed(f"{attr} must be a non-negative number", param=attr)
    if isinstance(e.tensor_parallel_size, bool) or not isinstance(e.tensor_parallel_size, int) \
            or e.tensor_parallel_size < 1:
        raise ValidationFailed("tensor_parallel_size must be an integer >= 1", param="tensor_parallel_size")
    if not isinstance(e.enforce_eager, bool):
        raise ValidationFailed("enforce_eager must be true or false", param="enforce_eager")
    if not isinstance(e.context_length, int) or e.context_length < 64:
        raise ValidationFailed("context_length must be an integer >= 64", param="context_length")
    _validate_capabilities(e)


def _validate_capabilities(e: Expert) -> None:
    if e.capabilities is None:
        return
    unknown = [c for c in e.capabilities if c not in CAPABILITIES]
    if unknown:
        raise ValidationFailed(f"unknown capability {unknown[0]!r}: capabilities are {', '.join(CAPABILITIES)}",
                               param="capabilities")
    cannot = [c for c in e.capabilities if e.backend in LOCAL_BACKENDS and c in LOCAL_CANNOT]
    if cannot:
        raise ValidationFailed(f"a {e.backend} expert cannot serve {cannot[0]!r}: Conclave's local workers "
                               "parse no tool calls, render text-only prompts and have no reasoning mode; "
                               "declare it on a remote (litellm) expert that serves the model", param="capabilities")


def _choice(attr: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValidationFailed(f"{attr} must be one of {', '.join(allowed)} (got {value!r})", param=attr)


__all__ = ["Expert", "BACKENDS", "CAPABILITIES", "DEFAULT_CAPABILITIES", "PROMPT_STYLES", "validate_name",
           "DEFAULT_TEMPLATE"]
