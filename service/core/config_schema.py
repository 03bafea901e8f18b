"""The settings schema: each ``Settings`` field's metadata, and how a value is read and shown.

A field of :class:`service.core.config.Settings` is declared with :func:`setting`, which records its
``CONCLAVE_*`` variable, its group and key in ``conclave.yaml``, its bounds and whether it is a secret.
:func:`specs_of` turns the dataclass into :class:`Spec` rows: the environment reader, the file reader
(``config_file.py``), ``conclave config show`` and ``config validate`` all walk these rows, so a new
setting is one field.  Values come as text (an environment variable, or ``os.environ/NAME`` in the
file: :func:`parse_text`) or typed (YAML: :func:`parse_typed`); both raise :class:`BadValue` with a
reason the caller prefixes with the variable's name or the key's path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from pathlib import Path
from urllib.parse import urlsplit

GROUPS = ("server", "store", "router", "aggregation", "scheduler", "limits", "keys")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
_KINDS = {"int": "int", "float": "float", "str": "str", "bool": "bool", "frozenset[str]": "keys", "Path": "path"}
_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "keys": "a list of strings", "path": "a path (a string)"}


class BadValue(ValueError):
    """A value a setting cannot take; ``reason`` reads after its name: 'must be an integer (got 'x')'."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def setting(default=MISSING, *, group: str, env: str, key: str | None = None, minimum: float | None = 1,
            choices: tuple[str, ...] = (), secret: bool = False, factory=MISSING):
    """A ``Settings`` field: its default, ``CONCLAVE_<env>``, ``group.key`` in the file (key: the field's
    name), the smallest number it takes, the words it takes, and whether ``config show`` masks it."""
    assert group in GROUPS, group
    meta = {"group": group, "env": "CONCLAVE_" + env, "key": key, "minimum": minimum, "choices": choices,
            "secret": secret}
    return dataclasses.field(default=default, default_factory=factory, metadata=meta)


@dataclass(frozen=True)
class Spec:
    name: str           # the Settings field
    env: str            # CONCLAVE_*
    group: str
    key: str            # the key under the group in conclave.yaml
    kind: str           # int, float, str, bool, keys (a set of strings), path
    optional: bool      # None is a value (unset, null, or an empty string for text)
    default: object
    minimum: float | None
    choices: tuple[str, ...]
    secret: bool

    @property
    def path(self) -> str:
        return f"{self.group}.{self.key}"

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return _NAMES[self.kind] + (" or null" if self.optional else "")


def specs_of(cls) -> tuple[Spec, ...]:
    rows = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        if "env" not in m:
            raise TypeError(f"{cls.__name__}.{f.name} is declared without setting(default, group=..., env=...): "
                            "every setting needs its variable and its place in conclave.yaml")
        base, _, none = str(f.type).partition(" | ")
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        rows.append(Spec(f.name, m["env"], m["group"], m["key"] or f.name, _KINDS[base], none == "None",
                         None if default is MISSING else default, m["minimum"], m["choices"], m["secret"]))
    return tuple(rows)


def parse_text(spec: Spec, raw: str):
    """A value given as text (an environment variable, or what ``os.environ/NAME`` names)."""
    if raw == "":
        return None if spec.optional and spec.kind == "str" else (frozenset() if spec.kind == "keys" else spec.default)
    if spec.kind == "bool":
        if raw.strip().lower() not in TRUE + FALSE:
            raise BadValue(f"must be one of {'/'.join(TRUE)} or {'/'.join(FALSE)} (got {raw!r})")
        return raw.strip().lower() in TRUE
    if spec.kind in ("int", "float"):
        try:
            value = int(raw) if spec.kind == "int" else float(raw)
        except ValueError:
            raise BadValue(f"must be {_NAMES[spec.kind]} (got {raw!r})") from None
        return _bounded(spec, value)
    if spec.kind == "keys":
        return frozenset(k.strip() for k in raw.split(",") if k.strip())
    if spec.kind == "path":
        return Path(raw).expanduser()
    return _chosen(spec, raw)


def parse_typed(spec: Spec, value):
    """A value as YAML typed it (text from ``os.environ/NAME`` goes through :func:`parse_text` first)."""
    if value is None:
        if spec.optional:
            return None
        raise BadValue(f"must be {spec.describe()}, not empty (remove the line to keep the default)")
    kind = spec.kind
    if kind == "keys" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(v.strip() for v in value if v.strip())
    if kind == "keys" and isinstance(value, str):
        return parse_text(spec, value)
    ok = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "path": (str,)}.get(kind, ())
    if not isinstance(value, ok) or (kind != "bool" and isinstance(value, bool)):
        raise BadValue(f"must be {spec.describe()} (got {_type_name(value)} {value!r})")
    if kind == "path":
        return Path(value).expanduser()
    if kind in ("int", "float"):
        return _bounded(spec, float(value) if kind == "float" else value)
    return _chosen(spec, value) if kind == "str" else value


def _bounded(spec: Spec, value):
    if spec.minimum is not None and value < spec.minimum:
        raise BadValue(f"must be >= {spec.minimum} (got {value})")
    return value


def _chosen(spec: Spec, value: str):
    if spec.choices and value not in spec.choices:
        raise BadValue(f"must be one of {', '.join(spec.choices)} (got {value!r})")
    return value


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def shown(spec: Spec, value) -> object:
    """A value as ``config show`` prints it: secrets masked (a URL keeps all but its password)."""
    if isinstance(value, frozenset):
        value = sorted(value)
    if isinstance(value, Path):
        value = str(value)
    if not spec.secret or value in (None, [], ""):
        return value
    if isinstance(value, list):
        return f"<{len(value)} secret{'s' if len(value) != 1 else ''}>"
    parts = urlsplit(value)
    if parts.password:
        return value.replace(f":{parts.password}@", ":****@", 1)
    return value if parts.scheme and parts.hostname else "****"
