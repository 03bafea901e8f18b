"""What every ``conclave`` command shares: the lazily opened :class:`Context` (settings, store,
gateway), the :class:`Group` that turns Conclave's errors into a one-line message, and ``pass_ctx``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from experts_registry.errors import ConclaveError


class Group(click.Group):
    """A click group that turns Conclave's errors into a one-line message and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConclaveError as exc:
            raise click.ClickException(exc.message) from None
        except Exception as exc:   # Redis went away mid-command: one line, not a traceback
            from ..core.redis_retry import is_redis_down

            if not is_redis_down(exc):
                raise
            raise click.ClickException(f"Redis does not answer ({type(exc).__name__}: {exc}): start it, or fix "
                                       "CONCLAVE_REDIS_URL") from None


class Context:
    """Settings and store, opened on first use (``--help`` touches neither)."""

    def __init__(self):
        self._settings = None
        self._store = None

    @property
    def settings(self):
        if self._settings is None:
            from ..core.config import load_settings

            self._settings = load_settings()
        return self._settings

    @property
    def store(self):
        if self._store is None:
            from experts_registry import offer_bundled, open_store

            s = self.settings
            self._store = open_store(s.home, s.redis_url, s.redis_prefix)
            offer_bundled(self._store)
        return self._store

    def gateway(self):
        from ..backends import BackendPool
        from ..pipeline.gateway import Gateway

        return Gateway(self.settings, self.store, BackendPool(self.settings))


pass_ctx = click.make_pass_decorator(Context, ensure=True)


def _use_config(click_ctx, _param, path) -> None:
    """``--config FILE``: CONCLAVE_CONFIG for this process and the ones it starts (uvicorn's workers)."""
    if path:
        os.environ["CONCLAVE_CONFIG"] = str(Path(path).expanduser().resolve())
        found = click_ctx.find_object(Context)
        if found is not None:
            found._settings = None


def config_option(command):
    """The ``--config FILE`` option (the settings file; CONCLAVE_* variables still override it)."""
    return click.option("--config", type=click.Path(exists=True, dir_okay=False), expose_value=False,
                        is_eager=True, callback=_use_config,
                        help="Settings file (conclave.yaml; as CONCLAVE_CONFIG). CONCLAVE_* variables override it.")(command)
