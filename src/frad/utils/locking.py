"""One owner per folder: an exclusive lock that names its holder and dies with it.

The lock is an ``flock`` on ``<folder>/.lock``, which the operating system releases when the
holding process ends however it ends (a crash or SIGKILL included), so a lock left by a
killed run is stale by construction and the next run takes it over.  The file also records
who holds it (host, pid, command, start time) for the message a second run stops with.
POSIX only (``fcntl``); on a shared filesystem it is as reliable as that filesystem's
``flock`` (NFSv4 and Lustre honour it; some FUSE filesystems do not).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from ..errors import ConfigError

__all__ = ["FolderLock", "FolderBusy"]

LOCK_NAME = ".lock"


class FolderBusy(ConfigError):
    """Another live process holds the folder."""


class FolderLock:
    """``with FolderLock(run_dir, what="run"):`` holds ``run_dir`` for this process.

    Entering fails at once with :class:`FolderBusy`, naming the holder, when another live
    process holds it; a lock whose holder died is taken over (and said so in ``took_over``)."""

    def __init__(self, folder: str | os.PathLike[str], *, what: str = "folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self.took_over: dict[str, object] | None = None
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def holder(self) -> dict[str, object] | None:
        """What the lock file says of its last holder (None when there is none or it is unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> FolderLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder() or {}
            who = f"pid {h.get('pid', '?')} on {h.get('host', '?')}"
            since = f" since {h['started']}" if h.get("started") else ""
            cmd = f" ({h['command']})" if h.get("command") else ""
            raise FolderBusy(
                f"{self.folder}: this {self.what} folder is in use by {who}{since}{cmd}; wait for it to finish, "
                f"stop it, or use another folder"
            ) from None
        previous = self.holder()
        if previous and previous.get("pid") not in (None, os.getpid()):
            self.took_over = previous  # its holder ended without releasing: a stale lock
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)  # a released lock names no holder
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
