"""A rich progress bar for training, silent when disabled (tests, non-main processes)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressDisplay:
    """Steps done out of the total, the running loss and the epoch.

    Example:
        >>> with ProgressDisplay(enabled=False, total=10) as p:
        ...     p.advance(loss=0.5, epoch=1)
    """

    def __init__(self, enabled: bool, total: int, completed: int = 0) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task = None
        self._total = total
        self._completed = completed

    def __enter__(self) -> ProgressDisplay:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]train[/] epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("train", total=self._total, completed=self._completed, epoch="-", loss="-")
        return self

    def advance(self, loss: float, epoch: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=f"{loss:.4f}", epoch=epoch)

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.log(text)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(et, ev, tb)
