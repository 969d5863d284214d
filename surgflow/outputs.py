"""Output folders and files: a lock per folder a long command writes into, writability checked
before long work starts, leftovers of killed writes removed, disk-full as a message.

    with FolderLock(run_dir, "surgflow train"):   # a second run into run_dir refuses
        ...
A lock is a file `.surgflow.lock` holding the owner's pid and host. It is released on exit; after
a crash (kill -9, power loss) the pid is gone and the next run takes the lock over, saying so.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Optional

from surgflow.io_utils import SurgflowError

LOCK_NAME = ".surgflow.lock"
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """Exclusive use of `folder` by one live process (see module docstring)."""

    def __init__(self, folder, what: str, log: Optional[Callable[[str], None]] = None):
        self.folder, self.what, self.log = Path(folder), what, log
        self.path = self.folder / LOCK_NAME
        self.held = False

    def _owner(self) -> Optional[dict]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written right now, or garbage: treated as held by an unknown owner

    def acquire(self) -> "FolderLock":
        check_writable_dir(self.folder, "output folder")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.what,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    continue  # released meanwhile
                pid, host = owner.get("pid"), owner.get("host")
                stale = isinstance(pid, int) and host == me["host"] and not _pid_alive(pid)
                if not stale:
                    who = (f"{owner.get('command', 'surgflow')} (pid {pid} on {host}, started "
                           f"{owner.get('started', '?')})") if owner else "another process"
                    raise SurgflowError(
                        f"{self.folder} is in use by {who}: two runs into one folder would overwrite "
                        f"each other's files. Wait for it to finish or choose another output folder; "
                        f"if that process is gone (another machine crashed), delete {self.path}")
                self.path.unlink(missing_ok=True)
                if self.log:
                    self.log(f"removed the stale lock of {owner.get('command', 'a run')} (pid {pid}, "
                             f"no longer running: interrupted) in {self.folder}")
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise SurgflowError(f"{self.path}: cannot take the lock (it keeps changing); retry")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(folder) -> Optional[dict]:
    """The owner record ({pid, host, command, started}) of `folder`'s lock while a live process
    holds it, else None. A lock of another host counts as live (its pid cannot be checked here);
    an unreadable lock file (being written) gives {}."""
    path = Path(folder) / LOCK_NAME
    try:
        owner = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    if not isinstance(owner, dict):
        return {}
    pid = owner.get("pid")
    if isinstance(pid, int) and owner.get("host") == socket.gethostname() and not _pid_alive(pid):
        return None  # stale: its process is gone
    return owner


def check_writable_dir(folder, what: str = "output folder", flag: str = "",
                       keep: bool = True) -> Path:
    """Prove a file can be written in `folder` (created if needed; `keep=False` removes the folders
    this check created, so a command that fails later leaves nothing); SurgflowError otherwise."""
    folder = Path(folder)
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    name = f"{flag} " if flag else ""
    if folder.exists() and not folder.is_dir():
        raise SurgflowError(f"{name}cannot write to {what} {folder}: it exists and is not a folder; "
                            f"choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        if not keep:
            for p in created:  # deepest first
                p.rmdir()
    except OSError as e:
        raise SurgflowError(f"{name}cannot write to {what} {folder} ({e.strerror or e}); choose a "
                            f"writable path or fix its permissions") from None
    return folder


def check_output_file(path, flag: str, overwrite: bool = True) -> Path:
    """An output file can be written at `path` (its folder is writable, it is not a folder, and
    when `overwrite` is False it does not exist yet). Checked before long work starts."""
    path = Path(path)
    if path.is_dir():
        raise SurgflowError(f"{flag} {path}: is a folder; pass a file name (e.g. {path / 'out'})")
    if path.exists() and not overwrite:
        raise SurgflowError(f"{flag} {path}: exists; remove it or choose another file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise SurgflowError(f"{flag} {path}: exists and is not writable; fix its permissions or "
                            f"choose another file name")
    check_writable_dir(path.parent, f"folder of {flag}", flag, keep=False)
    return path


def remove_partial_writes(folder, log: Optional[Callable[[str], None]] = None) -> int:
    """Delete temporary files of interrupted atomic writes (`.<name>.*.tmp`) in `folder`; returns
    the bytes freed. Only call it while holding the folder's lock (no writer is alive)."""
    folder = Path(folder)
    freed, n = 0, 0
    for p in folder.glob(".*.tmp") if folder.is_dir() else []:
        try:
            freed += p.stat().st_size
            p.unlink()
            n += 1
        except OSError:
            continue
    if n and log:
        log(f"removed {n} partial file(s) of interrupted writes in {folder} ({freed / 1e6:.1f} MB)")
    return freed


def disk_full_error(e: OSError, where, fix: str) -> SurgflowError:
    """The message for ENOSPC/EDQUOT while writing under `where`."""
    target = Path(e.filename) if getattr(e, "filename", None) else Path(where)
    try:
        free = shutil.disk_usage(Path(where) if Path(where).exists() else Path(where).parent).free
        space = f"{free / 1e9:.2f} GB free"
    except OSError:
        space = "free space unknown"
    return SurgflowError(f"disk full while writing {target} ({e.strerror or e}; {space} on that "
                         f"file system); {fix}")


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_FULL
