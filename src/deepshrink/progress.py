"""A progress bar over the steps of a long compression pass (layers fitted, ranks probed), on stderr.

Training has its own bar (the engine's); this one is for the verbs whose work
is a loop over layers: product quantization fits one layer after another, the
sensitivity allocation of ``factorize_`` fits every layer at several ranks.
Silent when disabled, so library calls and tests can turn it off.

Example:
    >>> with StepProgress(False, total=2, label="svd") as bar:
    ...     for name in ("fc1", "fc2"):
    ...         bar.start(name)
    ...         bar.done()
    >>> bar.completed
    2
"""

from __future__ import annotations

from typing import Any


class StepProgress:
    """A rich progress bar with ``label``, the current step's name, done/total and elapsed time.

    Example:
        >>> with StepProgress(False, total=1, label="pq") as bar:
        ...     bar.start("conv1"); bar.done()
        >>> bar.current, bar.completed
        ('conv1', 1)
    """

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled and total > 0, total, label
        self.current = ""
        self.completed = 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> StepProgress:
        if self.enabled:
            from rich.console import Console
            from rich.markup import escape
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn(f"[bold]{escape(self.label)}[/] {{task.fields[step]}}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True))
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total, step="")
        return self

    def start(self, name: str) -> None:
        """Show ``name`` as the step now running."""
        self.current = name
        if self._progress is not None:
            from rich.markup import escape

            self._progress.update(self._task, step=escape(name or "(model)"))

    def done(self) -> None:
        """Count one step as finished."""
        self.completed += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


__all__ = ["StepProgress"]
