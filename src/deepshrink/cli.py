"""The ``deepshrink`` command line.

Every command has ``--help`` with an example. Bad input (an unknown model or
data spec, a missing file, a bad recipe field) prints one line naming the
problem and the accepted values and exits with code 2; ``--debug`` shows the
traceback instead. Outputs are written atomically, so a failed command leaves
no file behind.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import typer
from rich.console import Console

from .errors import DeepshrinkError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="deepshrink",
    help="Make trained PyTorch models smaller and faster. Run `deepshrink COMMAND --help` for examples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    ctx.obj = {"debug": debug}


def _handles_errors(fn: F) -> F:
    """Turn expected errors into one line on stderr and exit code 2 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.ClickException):
            raise
        except (DeepshrinkError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            ctx = click.get_current_context(silent=True)
            debug = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("debug"))
            if debug:
                raise
            Console(stderr=True).print(f"[bold red]error:[/] {_one_line(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"file not found: {exc.filename}"
    return " ".join(text.split())


def _register_commands() -> None:
    # Commands live in small modules of their own; importing them attaches them to `app`.
    from .commands import analyze, compress, demo, eval as eval_cmd, files, train  # noqa: F401
    from .commands import lottery  # noqa: F401  (lottery tickets, prune/lottery.py)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``deepshrink`` console script.

    Example:
        >>> main(["--help"])  # doctest: +SKIP
    """
    _register_commands()
    app(args=argv if argv is not None else sys.argv[1:], prog_name="deepshrink")


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (for --json)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def existing_file(path: str | Path, what: str) -> Path:
    """The path, or a FileNotFoundError that names what was expected there."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(2, f"{what} not found", str(p))
    return p
