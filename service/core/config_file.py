"""``conclave.yaml``: the settings grouped by section, read against the schema with every error found.

    server:   {host: 0.0.0.0, port: 8000, workers: 2}
    store:    {redis_url: os.environ/REDIS_URL}
    keys:     {admin_keys: [os.environ/CONCLAVE_ADMIN_KEY]}

A string ``os.environ/NAME`` (LiteLLM's syntax) is the value of the environment variable NAME, read when
the file is, so secrets stay out of the file; an unset NAME is an error.  :func:`read_config` returns the
values it could read and one line per problem, each with its line and path in the file (a wrong type, an
unknown key with the nearest known one, a missing secret), so ``conclave config validate`` shows them all.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from .config_schema import GROUPS, BadValue, Spec, parse_text, parse_typed

ENV_PREFIX = "os.environ/"


def read_config(path: str | Path, specs: tuple[Spec, ...], env) -> "FileSettings":
    """What the file at ``path`` sets (``values``, ``sources`` by field) and its ``errors`` (lines)."""
    import yaml

    found = FileSettings(str(path), specs, env)
    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        found.errors.append(f"{path}: cannot read the config file ({exc.strerror or exc})")
        return found
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        found.errors.append(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}")
        return found
    if root is not None:
        found.read(root)
    return found


class FileSettings:
    def __init__(self, where: str, specs: tuple[Spec, ...], env):
        self.where, self.env = where, env
        self.by_path = {(s.group, s.key): s for s in specs}
        self.values: dict = {}
        self.sources: dict[str, str] = {}
        self.errors: list[str] = []
        self.lines: dict[str, int] = {}
        self.literal_secrets: list[str] = []   # paths of secrets written into the file itself

    def error(self, node, path: str, reason: str) -> None:
        self.errors.append(f"{self.where}:{node.start_mark.line + 1}: {path}: {reason}" if path
                           else f"{self.where}:{node.start_mark.line + 1}: {reason}")

    def read(self, root) -> None:
        import yaml

        if not isinstance(root, yaml.MappingNode):
            return self.error(root, "", f"the file must map sections ({', '.join(GROUPS)}) to settings")
        for key_node, section in root.value:
            group = key_node.value
            if group not in GROUPS:
                self.error(key_node, group, "unknown section" + _nearest(group, GROUPS))
            elif isinstance(section, yaml.ScalarNode) and section.value in ("", "~", "null"):
                continue   # an empty section
            elif not isinstance(section, yaml.MappingNode):
                self.error(section, group, "must be a mapping of settings (key: value)")
            else:
                for k, v in section.value:
                    self.entry(group, k, v)

    def entry(self, group: str, key_node, value_node) -> None:
        import yaml

        key, path = key_node.value, f"{group}.{key_node.value}"
        spec = self.by_path.get((group, key))
        if spec is None:
            return self.error(key_node, path, "unknown setting" + self.suggest(group, key))
        if spec.name in self.lines:
            return self.error(key_node, path, f"set twice (first on line {self.lines[spec.name]})")
        self.lines[spec.name] = key_node.start_mark.line + 1
        value = yaml.SafeLoader(".").construct_document(value_node)
        try:
            self.values[spec.name] = self.convert(spec, value)
        except BadValue as exc:
            return self.error(value_node, path, exc.reason)
        items = value if isinstance(value, list) else [value]
        via = [v for v in items if isinstance(v, str) and v.startswith(ENV_PREFIX)]
        self.sources[spec.name] = f"file:{self.where}" + (f" ({', '.join(via)})" if via else "")
        if spec.secret and len(via) < len(items) and self.values[spec.name]:
            self.literal_secrets.append(path)

    def convert(self, spec: Spec, value):
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            return parse_text(spec, self.secret(value[len(ENV_PREFIX):]))
        if isinstance(value, list) and spec.kind == "keys":
            resolved = [self.secret(v[len(ENV_PREFIX):]) if isinstance(v, str) and v.startswith(ENV_PREFIX) else v
                        for v in value]
            return frozenset().union(*(parse_typed(spec, v) for v in resolved)) if resolved else frozenset()
        return parse_typed(spec, value)

    def secret(self, name: str) -> str:
        if not name.replace("_", "a").isalnum():
            raise BadValue(f"{ENV_PREFIX}{name}: not an environment variable name")
        if name not in self.env:
            raise BadValue(f"{ENV_PREFIX}{name} names an environment variable that is not set: export it, "
                           "or write the value here")
        return self.env[name]

    def suggest(self, group: str, key: str) -> str:
        """Where the setting is (a key of another section, a field or variable name), or the nearest key."""
        aliases = {}
        for (g, k), spec in self.by_path.items():
            for alias in (k, spec.name, spec.env, spec.env.lower(), spec.env[len("CONCLAVE_"):].lower()):
                aliases.setdefault(alias, spec.path)
        found = aliases.get(key)
        if found and found != f"{group}.{key}":
            return f" (did you mean {found}?)"
        return _nearest(key, [k for g, k in self.by_path if g == group])


def _nearest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(options))})"
