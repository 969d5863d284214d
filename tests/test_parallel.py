"""surgflow.parallel: workers end with their parent, and the first failing job stops the others.

Both run a real parent process (a script in tmp_path) so that killing it is a real kill."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path

    def job(name, seconds, fail, folder):
        # written then renamed: a job stopped mid-write must not leave an empty pid file
        Path(folder, f"{name}.pid.tmp").write_text(str(os.getpid()))
        os.replace(Path(folder, f"{name}.pid.tmp"), Path(folder, f"{name}.pid"))
        if fail:
            time.sleep(0.5)
            raise ValueError(f"job {name} failed on purpose")
        time.sleep(seconds)
        Path(folder, f"{name}.done").write_text("done")
        return name

    if __name__ == "__main__":
        sys.path.insert(0, @REPO@)
        from surgflow.parallel import run_in_processes
        folder, mode = sys.argv[1], sys.argv[2]
        if mode == "sleep":          # two long jobs; the test kills this parent
            jobs = [("a", 120, False, folder), ("b", 120, False, folder)]
        elif mode == "fail":         # one job fails fast, one would run 120 s, two wait
            jobs = [("slow", 120, False, folder), ("bad", 0, True, folder),
                    ("queued1", 120, False, folder), ("queued2", 120, False, folder)]
        else:                        # all succeed; "fast" ends 3 s before "slow"
            jobs = [("slow", 3, False, folder), ("fast", 0, False, folder)]
        t0 = time.perf_counter()
        try:
            for name in run_in_processes(job, jobs, 2, start_method=@METHOD@):
                print(name, sorted(f.stem for f in Path(folder).glob("*.done")), flush=True)
        except ValueError as e:
            print(f"raised after {time.perf_counter() - t0:.1f} s: {e}", flush=True)
            sys.exit(3)
""")

REPO = str(Path(__file__).resolve().parents[1])


def _script(tmp_path: Path, method: str) -> Path:
    path = tmp_path / "parent.py"
    path.write_text(SCRIPT.replace("@REPO@", repr(REPO)).replace("@METHOD@", repr(method)))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_workers_end_when_the_parent_is_killed(tmp_path, method):
    work = tmp_path / "w"
    work.mkdir()
    parent = subprocess.Popen([sys.executable, str(_script(tmp_path, method)), str(work), "sleep"])
    try:
        pid_files = [work / "a.pid", work / "b.pid"]
        assert _wait_for(lambda: all(p.exists() and p.read_text() for p in pid_files), 60), \
            "workers never started"
        pids = [int(p.read_text()) for p in pid_files]
        assert all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        # before surgflow.parallel these workers slept on for 120 s
        assert _wait_for(lambda: not any(_alive(p) for p in pids), 15), \
            f"workers {[p for p in pids if _alive(p)]} outlived their killed parent"
        assert not (work / "a.done").exists() and not (work / "b.done").exists()
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_first_failure_stops_the_other_jobs_and_raises_at_once(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, str(_script(tmp_path, "spawn")), str(work), "fail"],
                         capture_output=True, text=True, timeout=100)
    wall = time.monotonic() - t0
    assert res.returncode == 3, res.stdout + res.stderr
    assert "job bad failed on purpose" in res.stdout
    # a plain `with ProcessPoolExecutor` waited for the 120 s job before raising
    assert wall < 60, f"raised only after {wall:.0f} s: the failure waited for the slow job"
    started = {f.stem: int(f.read_text()) for f in work.glob("*.pid")}
    assert "slow" in started
    left = [n for n, pid in started.items() if _alive(pid)]
    assert not left, f"jobs {left} were left running after a job had failed"
    assert not list(work.glob("*.done")), "a job ran to completion after another had failed"


def test_results_come_back_as_jobs_end(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    res = subprocess.run([sys.executable, str(_script(tmp_path, "fork")), str(work), "ok"],
                         capture_output=True, text=True, timeout=100)
    assert res.returncode == 0, res.stderr
    # each result arrives when its job ends, not when all have ended
    assert res.stdout.splitlines() == ["fast ['fast']", "slow ['fast', 'slow']"], res.stdout
