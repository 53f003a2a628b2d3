"""Progress bars and logging set-up shared by every command (rich)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sized

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def track[T](items: Iterable[T], description: str, *, enabled: bool = True,
          total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (silent when ``enabled`` is False or not a TTY)."""
    if not enabled or not console.is_terminal:  # a pipe or a log file gets no bar (rich left
        yield from items                         # a blank line there)
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def setup_logging(verbosity: int = 0) -> None:
    """-1 quiet (warnings), 0 normal (info from robolearn, warnings from libraries), 1 debug."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=verbosity > 0)],
                        force=True)
    for name in ("robolearn", "data", "sim", "hardware", "policies", "bench"):
        logging.getLogger(name).setLevel(level)
