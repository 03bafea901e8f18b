"""The project's performance harness (load, hot path, routing latency, scheduling); may import the evaluation suite above it in ``benchmarks`` and everything below."""
