"""rich progress bars on stderr for tensor streams (tensors, bytes, speed, ETA)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from rftpack.io import TensorInfo


def tensor_progress(console: Console, description: str, *, enabled: bool = True):
    """A pip-style progress wrapper: iterate TensorInfo items while a bar advances by bytes."""

    def wrap(items: Iterable[TensorInfo]) -> Iterator[TensorInfo]:
        infos = list(items)
        if not enabled or not console.is_terminal:  # no bars in logs and pipes
            yield from infos
            return
        total = sum(info.nbytes for info in infos)
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}/{task.fields[count]} tensors"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[current]}", justify="left"),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(description, total=total or 1, done=0, count=len(infos),
                                     current="")
            for done, info in enumerate(infos, start=1):
                progress.update(task, current=_short(info.name))
                yield info
                progress.update(task, advance=info.nbytes, done=done)
            progress.update(task, current="", completed=total or 1)

    return wrap


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]
