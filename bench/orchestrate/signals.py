"""How the driver stops: SIGTERM like Ctrl-C, and Ctrl-C even when started ignoring it.

SIGTERM is what schedulers, ``docker stop`` and ``kill`` send. Left to Ray, ``ray.init``'s
own handler kills the node's processes and calls ``sys.exit`` inside the handler, which
aborts a driver waiting in ``ray.wait`` (SIGABRT and a C++ crash dump). Here SIGTERM
raises ``Terminated``, a KeyboardInterrupt, so the sweep stops the way Ctrl-C stops it:
the finished trials' files are already written, running trials are cancelled (their
checkpoints stay), the Ray cluster this run started is shut down, and the CLI prints
the same line and exits 143 (128 + SIGTERM) instead of 130.

A process started in the background from a shell script inherits SIGINT ignored
(SIG_IGN), and Python keeps it ignored: ``install`` gives SIGINT its default Python
handler back (KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


class Terminated(KeyboardInterrupt):
    """The driver received SIGTERM: stop like Ctrl-C, exit 143."""

    exit_code = 128 + signal.SIGTERM


_received: list[int] = []  # SIGTERMs this process received through _on_sigterm


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Terminated("SIGTERM")


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The exit status for a run stopped by `interrupt`: 143 after SIGTERM, else 130.
    Ray's wait turns any exception its signal check raised into a plain
    KeyboardInterrupt, so the SIGTERM is remembered here, not only in the type."""
    if isinstance(interrupt, Terminated) or _received:
        return Terminated.exit_code
    return 128 + signal.SIGINT


def install() -> None:
    """SIGTERM raises Terminated, SIGINT raises KeyboardInterrupt (the default handler,
    also when this process was started with it ignored). Main thread only (Python
    allows handlers nowhere else); a no-op elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)


def installed() -> bool:
    """Whether this module's SIGTERM handler is in force."""
    return signal.getsignal(signal.SIGTERM) is _on_sigterm


def keeping_ours(start: Callable[[], Any]) -> Any:
    """Call `start` (``ray.init``, which sets a SIGTERM handler of its own) and put this
    module's handlers back if they were in force before."""
    ours = installed()
    try:
        return start()
    finally:
        if ours:
            install()
