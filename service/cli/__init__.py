"""The ``conclave`` command line (top room): one module per noun, may import every room below and ``benchmarks``."""

from .main import main

__all__ = ["main"]
