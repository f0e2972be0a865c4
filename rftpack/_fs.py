"""Small file-system helpers shared by the archive writer and the model sinks."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable, where the OS allows fsync on a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_partials(final: Path) -> None:
    """Delete ``.<name>.partial-<pid>`` files next to ``final`` left by runs that died (kill -9,
    power loss): their process is gone, so nobody will finish or remove them."""
    prefix = f".{final.name}.partial-"
    try:
        candidates = [p for p in final.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for path in candidates:
        pid = path.name[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            path.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but is somebody else's
        return True
    return True
