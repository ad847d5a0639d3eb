"""A training callback that stands in for a process dying mid-run (for the resume tests)."""

from __future__ import annotations

import deepshrink as ds


class Crash(Exception):
    """Raised by :class:`CrashAt`: the run stops as if the process had died."""


class CrashAt(ds.Callback):
    """Raise :class:`Crash` at the end of global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, s):
        if s.step == self.step:
            raise Crash
