"""benchmarks/device_check.sh: its --dry-run (the GPU machine's one call, on the CPU) runs every
step and every row of the GPU suite, so the script cannot rot between lent GPU sessions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_check.sh"


def _run(tmp_path, *args, timeout=170):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"), OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, cwd=tmp_path, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


@pytest.mark.slow
def test_dry_run_runs_every_step_under_a_minute(tmp_path):
    r = _run(tmp_path, "--dry-run")
    assert r.returncode == 0, r.stdout[-4000:]
    out = tmp_path / "out"
    for name in ("summary.txt", "env.txt", "nvidia-smi.txt", "gpu_tests.txt", "gpu_tests.xml",
                 "gpu_suite.md", "gpu_suite.json", "profile.txt"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = (out / "summary.txt").read_text()
    for step in ("env: exit 0", "gpu_tests: exit 0", "gpu_suite: exit 0"):
        assert step in summary, summary
    total = int(summary.split("total: ")[1].split(" s")[0])
    assert total < 90, summary  # under a minute on an idle 2-core machine; slack for a loaded one
    # the CUDA tests were collected and imported, and skipped cleanly (no CUDA here)
    suite = ET.parse(out / "gpu_tests.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) >= 7 and int(suite.get("errors")) == 0
    assert int(suite.get("failures")) == 0 and int(suite.get("skipped")) == int(suite.get("tests"))
    # every row of the suite ran (none failed or was skipped), and every goal has its figure
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["dry_run"] is True
    keys = {row["key"]: row for row in report["rows"]}
    assert set(keys) == {"paper", "bf16_1x64", "bf16_Bx64", "fc_64", "fc_long", "fc_video",
                         "compile_Bx64"}
    assert keys.pop("compile_Bx64")["skipped"] == "--no-compile"  # traced in tests/test_gpu.py
    assert all(row.get("frames_per_s", 0) > 0 for row in keys.values()), report["rows"]
    assert keys["paper"]["vs_paper"] == 1.0
    assert [r["key"] for r in report["data_path"]] == ["store", "store_aug"]
    assert set(report["goals"]) == {"speedup", "whole_video", "data_path", "schedule_hours"}
    assert report["goals"]["schedule_hours"]["frames"] == 40 * 2463 * 200
    assert len(report["longest_t"]) == 3 and all(r.get("longest") for r in report["longest_t"])
    assert "self" in (out / "profile.txt").read_text().lower()  # the profiler's table
    md = (out / "gpu_suite.md").read_text()
    assert "projected Cholec80 schedule" in md and "longest T that fits" in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_stops_before_the_tests(tmp_path):
    r = _run(tmp_path, timeout=120)
    assert r.returncode == 3, r.stdout[-2000:]
    assert "no CUDA device visible" in r.stdout
    assert not (tmp_path / "out" / "gpu_suite.md").exists()


def test_unknown_argument_is_refused(tmp_path):
    r = _run(tmp_path, "--fast", timeout=30)
    assert r.returncode == 2 and "only --dry-run" in r.stdout
