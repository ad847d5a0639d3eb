"""A wall-clock limit on pure-Python work that may not finish (Torch-Pruning's dependency tracing).

Torch-Pruning's dependency graph grows without end on a few architectures (RexNet's partial-channel
residuals, MaxViT's window partitions): the process spins at 100% CPU for hours instead of failing.
:func:`time_limit` raises :class:`TimeLimitExceeded` inside such work after a number of seconds, through
``SIGALRM``, which Python delivers between bytecodes. It only arms where that is safe: on the main
thread of a platform with ``setitimer``, and when no other real-time timer is running (it never
replaces someone else's alarm). Elsewhere the work runs without a limit.

Example:
    >>> with time_limit(5.0):
    ...     total = sum(range(1000))
    >>> total
    499500
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class TimeLimitExceeded(Exception):
    """The work inside :func:`time_limit` ran past its seconds."""


def _can_arm() -> bool:
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))


@contextmanager
def time_limit(seconds: float) -> Iterator[bool]:
    """Raise :class:`TimeLimitExceeded` in the block after ``seconds``; yields whether the limit is armed.

    Example:
        >>> import time
        >>> try:
        ...     with time_limit(0.05) as armed:
        ...         while armed:
        ...             time.sleep(0.01)
        ... except TimeLimitExceeded:
        ...     print("stopped")
        stopped
    """
    if seconds <= 0 or not _can_arm():
        yield False
        return

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise TimeLimitExceeded(f"did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


__all__ = ["TimeLimitExceeded", "time_limit"]
