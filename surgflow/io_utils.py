"""Atomic writes, progress output and optional-dependency checks shared by every command.

Every file surgflow writes goes to a temporary sibling first and is renamed into place, so an
interrupted run never leaves a file that looks finished.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm


class SurgflowError(Exception):
    """An error the user can fix; the CLI prints its message without a traceback."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; follow the umask instead
        os.replace(tmp_path, path)
    except OSError as e:
        if e.filename is None:  # a failed write() names no file: say which (disk-full messages)
            try:
                e.filename = str(path)
            except AttributeError:  # read-only in some subclasses (PyAV's)
                pass
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """`obj` as plain JSON values: NaN/inf (undefined scores) -> null (JSON has no NaN), numpy
    scalars and arrays -> Python numbers and lists, dict keys -> str, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array or scalar
        return json_safe(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomic JSON through json_safe (undefined values are written as null)."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch  # heavy: every command imports io_utils; only this writer needs torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------ progress
# On a terminal: tqdm bars. Anywhere else (a file, `| tee`, CI, SLURM): plain log lines, one per
# interval, never a carriage return or cursor code. SURGFLOW_NO_PROGRESS=1 silences both;
# SURGFLOW_PROGRESS=bar|lines|off forces a mode; SURGFLOW_LOG_INTERVAL sets the seconds between
# lines (default 10).
def progress_mode(file=None) -> str:
    """'bar', 'lines' or 'off' for output going to `file` (default stderr)."""
    forced = os.environ.get("SURGFLOW_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    if os.environ.get("SURGFLOW_NO_PROGRESS") == "1":
        return "off"
    file = file if file is not None else sys.stderr
    try:
        return "bar" if file.isatty() else "lines"
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return "lines"


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("SURGFLOW_LOG_INTERVAL", "10")))
    except ValueError:
        return 10.0


def _hms(seconds: float) -> str:
    seconds = int(max(0, round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


_POSTFIX_NAMES = {"fps": "frames/s"}


class LineProgress:
    """The tqdm calls surgflow uses (iterate, update, set_postfix, set_description, write, close),
    printed as one log line per `interval` seconds plus a closing line, e.g.
    ``[12:00:03] epoch 2/16: 40/120 step (33%), loss 0.4123, lr 1.00e-03, frames/s 52.1, 3.2 step/s,
    elapsed 0:00:12, eta 0:00:25``."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", initial=0, leave=True,
                 file=None, interval=None, clock=time.monotonic, **_ignored):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "", unit
        self.n = self.initial = int(initial or 0)
        self.leave, self.file = leave, file if file is not None else sys.stderr
        self.interval = _interval() if interval is None else float(interval)
        self.clock = clock
        self.start = self.last = clock()
        self.postfix: dict = {}
        self.closed = False
        self._printed = False
        self._printed_n = None  # count shown by the last line: never print the same line twice

    def __iter__(self):
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable is not iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return self.total or 0

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def set_postfix_str(self, s="", refresh=True):
        self.postfix = {"": s}

    def set_description(self, desc=None, refresh=True):
        self.desc = desc or ""

    def refresh(self):
        pass

    def write(self, msg: str) -> None:
        print(msg, file=self.file, flush=True)

    def update(self, n=1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._emit(now)

    def line(self, now=None) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self.start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{count} {self.unit}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        for k, v in self.postfix.items():
            parts.append(f"{_POSTFIX_NAMES.get(k, k)} {v}".strip())
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {_hms(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {_hms((self.total - self.n) / rate)}")
        stamp = time.strftime("%H:%M:%S")
        return f"[{stamp}] {self.desc + ': ' if self.desc else ''}" + ", ".join(parts)

    def _emit(self, now=None) -> None:
        print(self.line(now), file=self.file, flush=True)
        self._printed, self._printed_n = True, self.n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        now = self.clock()
        # A finished bar gets its closing line; a transient one (leave=False) only if it was slow.
        if self.n > self.initial and self._printed_n != self.n and (
                self.leave or self._printed or now - self.start >= self.interval):
            self._emit(now)


def progress(iterable=None, **kwargs):
    """A progress display on stderr: a tqdm bar on a terminal, log lines elsewhere (LineProgress),
    nothing when SURGFLOW_NO_PROGRESS=1 or disable=True. Accepts tqdm's keyword arguments."""
    kwargs.setdefault("file", sys.stderr)
    mode = "off" if kwargs.pop("disable", False) else progress_mode(kwargs["file"])
    interval = kwargs.pop("interval", None)
    if mode == "lines":
        return LineProgress(iterable, interval=interval, **kwargs)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=mode == "off", **kwargs)


@contextlib.contextmanager
def heartbeat(desc: str, every: float | None = None, file=None) -> Iterator[None]:
    """For a long step with no loop to count (an ONNX export, one audit): a line when it starts,
    a 'still running' line every `every` seconds (default SURGFLOW_LOG_INTERVAL, or 10; none when
    SURGFLOW_NO_PROGRESS=1), and a line with its duration when it ends.

        with heartbeat("audit bn_free"):
            audit_model(model)
    """
    file = file if file is not None else sys.stderr
    every = _interval() if every is None else float(every)
    quiet = progress_mode(file) == "off"
    t0 = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {desc} ...", file=file, flush=True)
    stop = threading.Event()

    def beat():
        while not stop.wait(max(every, 0.05)):
            print(f"[{time.strftime('%H:%M:%S')}] {desc}: still running, "
                  f"{_hms(time.monotonic() - t0)} so far", file=file, flush=True)

    thread = None
    if not quiet and every > 0:
        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        print(f"[{time.strftime('%H:%M:%S')}] {desc}: {'done' if ok else 'stopped'} in "
              f"{time.monotonic() - t0:.1f} s", file=file, flush=True)


def require_extra(module: str, extra: str, what: str):
    """Import an optional dependency or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SurgflowError(f"{what} needs the '{module}' package, which is not installed; install "
                            f"it with: pip install 'surgflow[{extra}]'") from None
