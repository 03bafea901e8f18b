"""Experts from a LiteLLM proxy config's ``model_list``, and one line for everything that does not map.

    model_list:
      - model_name: qwen                      -> the expert's name (lowercased, '/' and spaces -> '-')
        litellm_params:
          model: hosted_vllm/qwen             -> model (backend litellm; the gateway's lean client serves
          api_base: http://gpu-1:8000/v1         OpenAI-compatible ones), api_base (SSRF-checked)
          api_key: os.environ/QWEN_KEY        -> api_key_env (only the name; a literal key is refused)
          rpm: 60                             -> not mapped: Conclave limits per API key
        model_info: {max_input_tokens: 32768, input_cost_per_token: 1.0e-7, supports_function_calling: true}

:func:`plan_import` is pure apart from the address check of ``api_base`` (it resolves the host, as
registering an expert does): it reads the parsed YAML and the environment, and returns what to create,
what it noted (mapped with a change, or a key left out) and which entries it refused, each a
:class:`Note` naming the entry, the key and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import ConclaveError
from .model import CAPABILITIES as ALL_CAPABILITIES, DEFAULT_CAPABILITIES, RESERVED_PREFIX, Expert
from .upstream import check_upstream

ENV_PREFIX = "os.environ/"
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
CAPABILITIES = {"supports_function_calling": "tools", "supports_vision": "vision",
                "supports_response_schema": "json_schema"}
SAMPLING = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "presence_penalty",
            "frequency_penalty", "n")
LEFT_OUT = {
    "rpm": "Conclave limits requests per API key, not per expert: 'conclave keys create --rpm N'",
    "tpm": "Conclave limits tokens per API key, not per expert: 'conclave keys create --tpm N'",
    "timeout": "one timeout for every expert: limits.expert_timeout (CONCLAVE_EXPERT_TIMEOUT)",
    "stream_timeout": "one timeout for every expert: limits.expert_timeout (CONCLAVE_EXPERT_TIMEOUT)",
    "api_version": "not kept per expert: litellm reads AZURE_API_VERSION from the gateway's environment",
    "max_tokens": "LiteLLM's max_tokens (the output limit, or the window): the window came from max_input_tokens",
    "output_cost_per_token": "Conclave keeps one price: price_per_mtok came from the input price only",
}
SECTION_HINTS = {
    "general_settings": "the proxy's settings: master_key -> keys.admin_keys in conclave.yaml",
    "litellm_settings": "litellm's module settings: num_retries -> router.retries, request_timeout -> "
                        "limits.expert_timeout in conclave.yaml",
    "router_settings": "LiteLLM's load balancing: Conclave routes among experts itself (router.*, "
                       "store.redis_url in conclave.yaml)",
    "environment_variables": "export them in the gateway's environment instead",
}


@dataclass(frozen=True)
class Note:
    entry: str    # "model_list[2] (gpt-4o)"
    key: str      # "litellm_params.rpm"
    why: str

    def line(self) -> str:
        return f"{self.entry}: {self.key}: {self.why}"


@dataclass
class Plan:
    experts: list[Expert] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)      # the expert is created; this key is not (as it was)
    refused: list[Note] = field(default_factory=list)    # the entry is not imported


class _Refused(Exception):
    def __init__(self, key: str, why: str):
        super().__init__(why)
        self.key, self.why = key, why


def plan_import(config, env, source: str = "the LiteLLM config", allow_unsafe: bool = False) -> Plan:
    """What ``conclave experts import`` would create from ``config`` (a parsed LiteLLM proxy config)."""
    plan = Plan()
    if not isinstance(config, dict) or not isinstance(config.get("model_list"), list):
        plan.refused.append(Note(source, "model_list", "missing: a LiteLLM proxy config has a list 'model_list'"))
        return plan
    for section in config:
        if section != "model_list":
            why = SECTION_HINTS.get(section, "not a part of LiteLLM's config Conclave knows")
            plan.notes.append(Note(source, section, "not imported: " + why))
    names: set[str] = set()
    for i, item in enumerate(config["model_list"]):
        label = f"model_list[{i}]" + (f" ({item.get('model_name')})" if isinstance(item, dict) else "")
        notes: list[Note] = []
        try:
            expert = _expert(item, env, source, allow_unsafe, names, lambda k, w: notes.append(Note(label, k, w)))
        except _Refused as exc:
            plan.refused.append(Note(label, exc.key, exc.why))
            continue
        names.add(expert.name)
        plan.experts.append(expert)
        plan.notes.extend(notes)
    return plan


def _expert(item, env, source: str, allow_unsafe: bool, taken: set[str], note) -> Expert:
    if not isinstance(item, dict):
        raise _Refused("", "an entry must be a mapping with model_name and litellm_params")
    for key in item:
        if key not in ("model_name", "litellm_params", "model_info"):
            note(key, "not mapped: not a key of a LiteLLM model_list entry Conclave knows")
    params, info = item.get("litellm_params"), item.get("model_info") or {}
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise _Refused("litellm_params.model", "missing: the litellm model string is required")
    if not isinstance(info, dict):
        raise _Refused("model_info", "must be a mapping")
    fields = {"name": _name(item.get("model_name"), taken, note), "backend": "litellm",
              "model": _text(params["model"], env, "litellm_params.model"),
              "description": f"imported from {source} (model_name {item.get('model_name')})"}
    if "*" in fields["model"]:
        raise _Refused("litellm_params.model", "a wildcard route: register each model it should serve")
    fields.update(_params(params, env, allow_unsafe, note))
    fields.update(_info(info, note))
    try:
        return Expert(**fields)
    except ConclaveError as exc:
        raise _Refused(exc.param or "", exc.message) from None


def _name(raw, taken: set[str], note) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise _Refused("model_name", "missing: the name clients send as 'model'")
    if "*" in raw:
        raise _Refused("model_name", "a wildcard route: register each model it should serve")
    name = re.sub(r"[^a-z0-9._-]+", "-", raw.strip().lower()).strip("-._")[:64]
    if not name or name.startswith(RESERVED_PREFIX):
        raise _Refused("model_name", f"{raw!r} cannot be an expert name (names starting {RESERVED_PREFIX!r} are "
                                     "reserved): rename it in the file")
    if name in taken:
        raise _Refused("model_name", f"a second deployment of {name!r} (LiteLLM load-balances them; an expert has "
                                     "one endpoint): register it under another name with 'conclave experts add'")
    if name != raw:
        note("model_name", f"the expert is named {name!r} (lowercase letters, digits, '-', '_', '.'): clients "
                           f"send model {name!r}")
    return name


def _text(value, env, key: str) -> str:
    if not isinstance(value, str):
        raise _Refused(key, f"must be a string (got {value!r})")
    if value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        if not env.get(name):
            raise _Refused(key, f"{value} names an environment variable that is not set here")
        return env[name]
    return value


def _params(params: dict, env, allow_unsafe: bool, note) -> dict:
    out = {}
    for key, value in params.items():
        where = f"litellm_params.{key}"
        if key == "model":
            continue
        if key == "api_base":
            out["api_base"] = _text(value, env, where)
            try:
                check_upstream(out["api_base"], allow_unsafe)
            except ConclaveError as exc:
                raise _Refused(where, exc.message) from None
        elif key == "api_key":
            out["api_key_env"] = _key_env(value, where)
        elif key == "stop" and isinstance(value, (str, list)):
            out["stop"] = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
        elif key in SAMPLING:
            note(where, "not mapped: an expert keeps no default sampling parameters (clients send them per request)")
        else:
            note(where, "not mapped: " + LEFT_OUT.get(key, "Conclave passes litellm only the model, api_base and key"))
    return out


def _key_env(value, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(ENV_PREFIX):
        raise _Refused(where, "a literal key: Conclave stores only the name of the environment variable that holds "
                              "it: export the key (e.g. QWEN_KEY=...) and write api_key: os.environ/QWEN_KEY")
    name = value[len(ENV_PREFIX):]
    if not ENV_NAME.match(name):
        raise _Refused(where, f"{name!r} is not an environment variable name (A-Z, 0-9, _)")
    return name


def _info(info: dict, note) -> dict:
    out, flags = {}, {}
    window = info.get("max_input_tokens", info.get("max_tokens"))
    if isinstance(window, int) and not isinstance(window, bool) and window >= 64:
        out["context_length"] = window
        if "max_input_tokens" not in info:
            note("model_info.max_tokens", f"context_length is {window}: check it is the context window")
    elif window is not None:
        note("model_info.max_input_tokens" if "max_input_tokens" in info else "model_info.max_tokens",
             f"not mapped: a context length is an integer >= 64 (got {window!r}); the default 2048 applies")
    prices = [info.get(k) for k in ("input_cost_per_token", "output_cost_per_token")]
    if isinstance(prices[0], (int, float)) and prices[0] >= 0:
        out["price_per_mtok"] = round(prices[0] * 1e6, 6)
    mode = info.get("mode", "chat")
    if mode not in ("chat", "completion"):
        raise _Refused("model_info.mode", f"{mode!r}: Conclave serves chat and completion models only")
    if mode == "completion":
        out["prompt_style"] = "completion"
        note("model_info.mode", "completion: prompts use Conclave's default template ('Q: {prompt}\\nA:'); set "
                                "another with 'conclave experts add --template ... --replace'")
    for key, value in info.items():
        if key in CAPABILITIES:
            if isinstance(value, bool):
                flags[CAPABILITIES[key]] = value
        elif key in ("max_input_tokens", "input_cost_per_token", "mode") or (
                key == "max_tokens" and "max_input_tokens" not in info):
            continue
        else:
            note(f"model_info.{key}", "not mapped: " + LEFT_OUT.get(key, "Conclave's expert record has no such field"))
    if flags:   # the remote default (tools, json_schema, logprobs, reasoning), changed where model_info says otherwise
        caps = {c for c in DEFAULT_CAPABILITIES["litellm"] if flags.get(c, True)} | {c for c, on in flags.items() if on}
        out["capabilities"] = tuple(c for c in ALL_CAPABILITIES if c in caps)
        note("model_info", f"capabilities {', '.join(out['capabilities']) or 'none'} (from "
                           f"{', '.join(k for k in CAPABILITIES if k in info)})")
    return out
