"""The HTTP server (ASGI app, fast path, auth, limits, admin routes); may import pipeline, backends, scheduler, workers, core."""
