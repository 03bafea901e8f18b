"""The ``conclave`` command line: the top group and the registration of every noun's commands.

Commands are grouped by noun (``conclave experts ...``), one module each in this package; each
docstring is its ``--help`` and shows an example.  Errors print what to do next and exit 1.
"""

from __future__ import annotations

import click

from .context import Group, config_option


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="conclave")
@config_option
def main():
    """Conclave: an OpenAI-compatible gateway that answers with whole expert LLMs.

    \b
    Quick start:
      conclave experts list                 # the registered experts
      conclave chat "What is 2+2?"          # one answer through the routed pipeline
      conclave serve --port 8000            # the HTTP gateway
      conclave doctor                       # check this install (llama.cpp build, experts, store)
      conclave --config conclave.yaml config show   # the effective settings and where each came from

    Settings come from a file (--config, or CONCLAVE_CONFIG) and CONCLAVE_* environment variables,
    which override it (docs/configuration.md).
    """


def _register_groups() -> None:
    from benchmarks.cli import bench

    from .chat import chat
    from .config import config
    from .doctor import doctor
    from .experts import experts
    from .experts_import import import_litellm
    from .keys import keys
    from .profile import profile
    from .router import route, router_group
    from .serve import serve
    from .worker import worker
    from .workers import workers

    for command in (serve, chat, experts, keys, profile, route, router_group, bench, worker, workers, doctor, config):
        main.add_command(command)
    experts.add_command(import_litellm)


_register_groups()
