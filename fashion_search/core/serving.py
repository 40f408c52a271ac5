"""Process lifecycle helpers shared by the gRPC servers."""

from __future__ import annotations

import logging
import signal
import threading

import grpc

log = logging.getLogger(__name__)

GRACE_S = 5.0


def wait_for_termination(server: grpc.Server) -> None:
    """Block until SIGTERM/SIGINT, then stop gracefully (in-flight calls get GRACE_S to finish)."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
    server.stop(GRACE_S).wait()
