"""benchmarks/recipe_grid.py: a variant may name its own preset, a plan with a bad variant fails
before any job runs, and a failed job is retried, not skipped (the grid runs for hours)."""
import argparse
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def load_grid():
    spec = importlib.util.spec_from_file_location("recipe_grid", REPO / "benchmarks" / "recipe_grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_plan(tmp_path, variants):
    plan = {"preset": "synthetic_phase_tiny",
            "data": {"real": {"profile": "realistic", "seed": 1}},
            "variants": variants,
            "jobs": [{"data": ["real"], "variants": list(variants), "seeds": [0]}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_a_variant_runs_on_the_preset_it_names_and_the_others_on_the_plans(tmp_path, monkeypatch):
    grid = load_grid()
    plan = grid.load_plan(write_plan(tmp_path, {
        "tiny": {},
        "lite0": {"preset": "synthetic_phase_lite0", "size": "160x96", "set": ["train.epochs=2"]}}))
    jobs = {j["variant"]: j for j in grid.plan_jobs(plan)}
    assert jobs["tiny"]["preset"] == "synthetic_phase_tiny"
    assert jobs["lite0"]["preset"] == "synthetic_phase_lite0"
    assert jobs["lite0"]["overrides"] == ["train.epochs=2"]

    commands = []

    def fake_run(cmd, **kwargs):  # record the train command; fail it, so nothing else runs
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(grid.subprocess, "run", fake_run)
    (tmp_path / "logs").mkdir()
    result = grid.run_job(jobs["lite0"], plan, tmp_path, "cpu")
    train = commands[0]
    assert train[train.index("train") + 1] == "synthetic_phase_lite0"
    assert "train.epochs=2" in train
    assert result["preset"] == "synthetic_phase_lite0" and result["rc"] == 1


@pytest.mark.parametrize("variant, named", [
    ({"set": ["train.no_such_key=1"]}, "no_such_key"),
    ({"preset": "no_such_preset"}, "no_such_preset"),
])
def test_a_plan_with_a_bad_variant_fails_before_any_job_naming_the_variant(tmp_path, variant, named):
    grid = load_grid()
    with pytest.raises(SystemExit) as err:
        grid.load_plan(write_plan(tmp_path, {"ok": {}, "broken": variant}))
    assert "variant 'broken'" in str(err.value) and named in str(err.value)


def test_the_shipped_plan_loads():
    grid = load_grid()
    plan = grid.load_plan(REPO / "benchmarks" / "recipe_grid.yaml")
    assert grid.plan_jobs(plan)


def test_a_second_run_retries_failed_jobs_and_the_report_drops_their_replaced_rows(tmp_path, capsys):
    grid = load_grid()
    scores = {"acc": 95.0, "recall": {"Preparation": 1.0}}
    ok = {"data": "real", "variant": "tiny", "seed": 0, "train_s": 600.0, "rc": 0, "val": [80.0, 90.0],
          "late_drop": 0.0, "late_fall": 0.0, "best": scores, "last": scores, "wall_s": 610.0}
    killed = {"data": "real", "variant": "tiny", "seed": 1, "train_s": 8.7, "rc": 143}
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in (killed, ok)) + "\n")
    assert grid.finished_jobs(results) == {("real", "tiny", 0)}  # seed 1 runs again

    grid.cmd_report(argparse.Namespace(results=[results], last_pt="", reference="tiny"))
    assert "FAILED: real tiny seed 1" in capsys.readouterr().out
    with open(results, "a") as f:  # the retry finished
        f.write(json.dumps({**ok, "seed": 1}) + "\n")
    assert grid.finished_jobs(results) == {("real", "tiny", 0), ("real", "tiny", 1)}
    grid.cmd_report(argparse.Namespace(results=[results], last_pt="", reference="tiny"))
    assert "FAILED" not in capsys.readouterr().out
