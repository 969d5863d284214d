"""Worker processes that cannot outlive their job: the one process pool demo, experiments,
prepare and synth share.

Two failure modes this exists for:
- the parent is killed (kill, OOM, a closed terminal): plain pool workers keep training, holding
  run-folder locks and cores. Here each worker asks the kernel for SIGTERM when its parent dies
  (Linux PR_SET_PDEATHSIG) and, elsewhere, watches its parent pid.
- one job fails: a plain `with ProcessPoolExecutor` waits for every other job (minutes of
  training) before the error reaches the user. Here pending jobs are cancelled and running workers
  stopped, and the first error is raised at once.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterable, Iterator, Sequence

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker when `parent_pid` goes away."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # parent died before prctl took effect
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # portable fallback: a re-parented worker sees another ppid
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="surgflow-parent-watch", daemon=True).start()


def _stop(children: Iterable[mp.process.BaseProcess]) -> None:
    for p in children:
        if p.is_alive():
            p.terminate()
    for p in children:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()


def run_in_processes(fn: Callable, jobs: Sequence[tuple], workers: int,
                     start_method: str = "spawn", **kwargs) -> Iterator:
    """Yield `fn(*job, **kwargs)` for each job, in completion order, from `workers` processes.

    The first job that raises stops the others (pending ones never start, running ones are
    terminated) and its exception propagates. Workers end with the parent process.
    start_method: "spawn" where the parent already ran torch (its thread pools do not survive
    fork), "fork" for light jobs started before torch work.
    """
    before = set(mp.active_children())
    ex = ProcessPoolExecutor(max(1, min(workers, len(jobs))), mp_context=mp.get_context(start_method),
                             initializer=_die_with_parent, initargs=(os.getpid(),))
    ok = False
    try:
        pending = {ex.submit(fn, *job, **kwargs) for job in jobs}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(finished, key=lambda f: f.exception() is None):  # failures first
                yield f.result()  # raises the job's own exception
        ok = True
    finally:
        if ok:
            ex.shutdown(wait=True)
        else:  # a job failed, or the caller stopped iterating / was interrupted
            ex.shutdown(wait=False, cancel_futures=True)
            _stop([p for p in mp.active_children() if p not in before])
