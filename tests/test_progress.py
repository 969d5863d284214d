"""Progress output: tqdm bars on a terminal only; elsewhere readable log lines (no carriage returns,
no cursor codes), one per interval with count, postfix (loss, lr, frames/s), rate and eta."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surgflow.io_utils import LineProgress, heartbeat, progress, progress_mode


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_one_line_per_interval_with_training_fields():
    out, clock = io.StringIO(), FakeClock()
    bar = LineProgress(total=40, desc="epoch 1/2", unit="step", file=out, interval=10, clock=clock)
    for i in range(35):
        clock.t = i + 1.0  # one step per second
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.4f}", lr="1.00e-03", fps="3.0")
    bar.close()
    lines = out.getvalue().splitlines()
    # lines after 10, 20 and 30 s, then the closing line at 35/40
    assert [ln.split("epoch 1/2: ")[1].split(" step")[0] for ln in lines] == ["10/40", "20/40",
                                                                                "30/40", "35/40"]
    first = lines[0]
    assert "(25%)" in first and "lr 1.00e-03" in first and "frames/s 3.0" in first
    assert "1 step/s" in first and "eta 0:00:30" in first and "loss 0.1111" in first
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_no_repeated_closing_line_and_transient_bars_stay_quiet():
    out, clock = io.StringIO(), FakeClock()
    bar = LineProgress(total=2, desc="eval", unit="video", file=out, interval=1, clock=clock)
    clock.t = 5
    bar.update(2)  # the interval passed: printed at 2/2 ...
    bar.close()    # ... and not again at close
    assert out.getvalue().count("2/2 video") == 1
    out2 = io.StringIO()
    fast = LineProgress(range(3), desc="validation", file=out2, interval=10, clock=FakeClock(),
                        leave=False)
    assert list(fast) == [0, 1, 2]
    assert out2.getvalue() == ""  # a quick transient bar (leave=False) prints nothing


def test_mode_follows_the_terminal(monkeypatch):
    monkeypatch.delenv("SURGFLOW_NO_PROGRESS", raising=False)
    monkeypatch.delenv("SURGFLOW_PROGRESS", raising=False)
    assert progress_mode(Tty()) == "bar" and progress_mode(io.StringIO()) == "lines"
    assert isinstance(progress(range(2), file=io.StringIO()), LineProgress)
    assert not isinstance(progress(range(2), file=Tty()), LineProgress)  # tqdm on a terminal
    monkeypatch.setenv("SURGFLOW_PROGRESS", "lines")
    assert progress_mode(Tty()) == "lines"
    monkeypatch.delenv("SURGFLOW_PROGRESS")
    monkeypatch.setenv("SURGFLOW_NO_PROGRESS", "1")
    quiet = io.StringIO()
    assert list(progress(range(3), file=quiet, desc="x")) == [0, 1, 2]
    assert quiet.getvalue() == "" and progress_mode(Tty()) == "off"


def test_heartbeat_lines(monkeypatch):
    monkeypatch.delenv("SURGFLOW_NO_PROGRESS", raising=False)
    out = io.StringIO()
    with heartbeat("export: tracing", every=0.05, file=out):
        time.sleep(0.3)
    text = out.getvalue()
    assert text.splitlines()[0].endswith("export: tracing ...")
    assert "still running" in text and "export: tracing: done in" in text
    out = io.StringIO()
    with pytest.raises(ValueError):
        with heartbeat("audit", every=0, file=out):
            raise ValueError("boom")
    assert "audit: stopped in" in out.getvalue() and "still running" not in out.getvalue()


def test_piped_command_writes_a_plain_log(tmp_path):
    """`surgflow synth` with its stderr on a pipe (as under `| tee` or SLURM): log lines, no redraws."""
    env = {k: v for k, v in os.environ.items() if k not in ("SURGFLOW_NO_PROGRESS", "SURGFLOW_PROGRESS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env["SURGFLOW_LOG_INTERVAL"] = "0"  # a line per video
    res = subprocess.run([sys.executable, "-m", "surgflow", "synth", str(tmp_path / "s"), "--videos",
                          "2", "--size", "32x32", "--min-seconds", "20", "--max-seconds", "20",
                          "--workers", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "synth: 1/2 video (50%)" in res.stderr and "synth: 2/2 video (100%)" in res.stderr
    assert "\r" not in res.stderr + res.stdout and "\x1b" not in res.stderr + res.stdout
