"""When the server starts a graceful shutdown, tell the app before the grace period runs out.

uvicorn handles SIGTERM and SIGINT itself: it stops accepting, waits up to its graceful timeout
(``CONCLAVE_SHUTDOWN_GRACE``) for in-flight requests, then cancels them; the app's lifespan hears of
it only afterwards.  Requests waiting on the Redis queue must be answered *before* the deadline
(a retryable 503, their jobs kept), so the app puts its own handler in front of the server's.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

MARGIN_S = 1.0   # queued requests are answered this long before the grace period ends
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_shutdown_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback()`` on SIGTERM/SIGINT, then the handler that was there before (the server's).
    Returns a function that puts the previous handlers back.  Outside the main thread (where Python
    runs signal handlers; e.g. an app under TestClient) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handler(sig, frame):
        callback()
        before = previous[sig]
        if callable(before):
            before(sig, frame)
        elif before == signal.SIG_DFL:   # the default action: put it back and deliver the signal again
            signal.signal(sig, before)
            signal.raise_signal(sig)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)
    return restore
