"""Rich progress bars for the long steps (reading topics/files, building features)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class Task:
    progress: Progress | None
    task_id: TaskID | None

    def set(self, completed: int) -> None:
        if self.progress is not None and self.task_id is not None:
            self.progress.update(self.task_id, completed=completed)


class Bars:
    """Progress bars on stderr; `enabled=False` (tests, --quiet) shows nothing."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int | None, unit: str = "items") -> Iterator[Task]:
        if not self.enabled:
            yield Task(None, None)
            return
        count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            count,
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total)
            yield Task(progress, task_id)
            if total is not None:
                progress.update(task_id, completed=total)
