"""Which recipe learns, measured across data conditions and seeds (issue 20): a grid of training
runs of one preset over synthetic datasets (profile, data seed, frame size), variants (dotted
overrides: each lever on or off) and training seeds, run in parallel worker processes until a
deadline, then one table with seed spreads and paired 95% intervals against a reference variant.

    python benchmarks/recipe_grid.py run benchmarks/recipe_grid.yaml --work /tmp/grid --workers 2
    python benchmarks/recipe_grid.py report /tmp/grid/results.jsonl --reference preset > table.md

`run` makes the datasets the plan names (`surgflow synth` + `surgflow prepare`, in parallel),
then runs the jobs in the plan's order (the first blocks first: put what must be measured there)
with `--workers` processes: `surgflow train PRESET --set data.root=... --set train.seed=S
[overrides]` (PRESET: the variant's `preset:` if it names one, else the plan's), `surgflow eval RUN
--split test` on best.pt and on last.pt. Every variant's preset and overrides are checked when the
plan loads. Each finished job is one line of `results.jsonl` (appended when it ends: an
interrupted grid keeps what finished, and a second `run` skips the jobs that finished and retries
the ones that failed or were killed). No job starts when the time left is below the longest job
so far (`--deadline`, seconds from the start). On a GPU machine pass `--device cuda`: the workers
share the one GPU, one CPU thread each.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENV = {"HF_HUB_OFFLINE": "1", "SURGFLOW_NO_PROGRESS": "1", "MPLBACKEND": "Agg",
       "PYTHONUNBUFFERED": "1"}


def surgflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "surgflow", *args]


def late_drop(metrics_csv: Path, key: str = "val/accuracy") -> tuple[list[float], float]:
    """Validation values per epoch (percent) and the largest fall below the run's best value
    among the epochs of the last third of training (the issue's stability target)."""
    with open(metrics_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(key)]
    vals = [100 * float(r[key]) for r in rows]
    if not vals:
        return [], float("nan")
    return vals, max(max(vals) - v for v in vals[last_third(vals):])


def last_third(vals: list[float]) -> int:
    """Index of the first validation of the last third of training (at least the last one)."""
    return len(vals) - max(len(vals) // 3, 1)


def late_fall(vals: list[float]) -> float:
    """The largest fall below the best validation value reached SO FAR among the epochs of the
    last third: a curve past its peak and falling (overfitting) scores its fall, a curve still
    rising scores 0, where `late_drop` (below the whole run's best) scores its climb."""
    if not vals:
        return float("nan")
    return max(max(vals[:i + 1]) - vals[i] for i in range(last_third(vals), len(vals)))


def phase_summary(scores_json: Path) -> dict:
    s = json.loads(scores_json.read_text())["scores"]["phase"]
    return {"acc": s["video"]["accuracy"]["mean"], "acc_video_std": s["video"]["accuracy"]["std"],
            "recall": {k: v["recall"] for k, v in s["per_phase"].items()},
            "f1": {k: v["f1"] for k, v in s["per_phase"].items()}}


# ---------------------------------------------------------------- plan
def variant_preset(plan: dict, variant: dict) -> str:
    """The preset a variant runs on: its own `preset:`, else the plan's."""
    return variant.get("preset", plan["preset"])


def load_plan(path: Path) -> dict:
    plan = yaml.safe_load(path.read_text())
    for key in ("preset", "data", "variants", "jobs"):
        if key not in plan:
            raise SystemExit(f"{path}: missing '{key}'")
    from surgflow.config import ConfigError, load_config
    for name, v in plan["variants"].items():  # a typo fails now, not after hours of other jobs
        v = v or {}
        try:
            load_config(variant_preset(plan, v), list(v.get("set", [])))
        except ConfigError as e:
            raise SystemExit(f"{path}: variant '{name}': {e}") from None
    return plan


def plan_jobs(plan: dict) -> list[dict]:
    """[{data, variant, seed, preset, overrides, size}] in the plan's order, without repeats. A
    variant runs on the plan's preset unless it names its own (`preset:`): a variant for another
    preset names it instead of copying its settings as overrides, so a change to that preset (or
    to the one it extends) reaches the variant as it reaches users."""
    jobs, seen = [], set()
    for block in plan["jobs"]:
        for data in block["data"]:
            if data not in plan["data"]:
                raise SystemExit(f"jobs: unknown data '{data}' (known: {', '.join(plan['data'])})")
            for variant in block["variants"]:
                if variant not in plan["variants"]:
                    raise SystemExit(f"jobs: unknown variant '{variant}'")
                v = plan["variants"][variant] or {}
                for seed in block["seeds"]:
                    key = (data, variant, seed)
                    if key not in seen:
                        seen.add(key)
                        jobs.append({"data": data, "variant": variant, "seed": seed,
                                     "preset": variant_preset(plan, v),
                                     "overrides": list(v.get("set", [])),
                                     "size": v.get("size", plan["data"][data].get("size", "112x64"))})
    return jobs


def prepared_dir(work: Path, data: str, size: str) -> Path:
    return work / "data" / f"{data}_{size}"


def make_data(work: Path, name: str, spec: dict, sizes: set, log, workers: int = 1) -> None:
    raw = work / "data" / f"{name}_raw"
    if not (raw / "synth.json").exists():
        cmd = surgflow("synth", str(raw), "--videos", str(spec.get("videos", 25)),
                       "--seed", str(spec["seed"]), "--profile", spec.get("profile", "clean"),
                       "--min-seconds", str(spec.get("min_seconds", 90)),
                       "--max-seconds", str(spec.get("max_seconds", 180)), "--workers", str(workers))
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **ENV})
    for size in sorted(sizes):
        out = prepared_dir(work, name, size)
        if not (out / "manifest.json").exists():
            subprocess.run(surgflow("prepare", "cholec80", str(raw), str(out), "--fps", "1",
                                    "--size", size, "--workers", str(workers)),
                           check=True, capture_output=True, env={**os.environ, **ENV})
    log(f"data {name} ({spec.get('profile', 'clean')}, seed {spec['seed']}): ready")


# ---------------------------------------------------------------- one job
def run_job(job: dict, plan: dict, work: Path, device: str) -> dict:
    name = f"{job['data']}-{job['variant']}-s{job['seed']}"
    run = work / "runs" / name
    env = {**os.environ, **ENV, "OMP_NUM_THREADS": os.environ.get("GRID_THREADS", "1")}
    logs = work / "logs"
    t0 = time.time()
    train = surgflow("train", job["preset"], "--out", str(run),
                     "--set", f"data.root={prepared_dir(work, job['data'], job['size'])}",
                     "--set", f"train.seed={job['seed']}", "--set", f"train.device={device}",
                     *[a for o in job["overrides"] for a in ("--set", o)])
    if (run / "checkpoints" / "last.pt").exists():
        train.append("--resume")
    with open(logs / f"{name}.train.log", "w") as f:
        rc = subprocess.run(train, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    result = {**{k: job[k] for k in ("data", "variant", "seed", "preset", "size", "overrides")},
              "train_s": round(time.time() - t0, 1), "rc": rc}
    if rc != 0:
        return result
    vals, drop = late_drop(run / "metrics.csv")
    result.update(val=[round(v, 2) for v in vals], late_drop=round(drop, 2),
                  late_fall=round(late_fall(vals), 2))
    for which in ("best", "last"):
        out = run / f"eval_test_{which}"
        with open(logs / f"{name}.eval_{which}.log", "w") as f:
            rc = subprocess.run(surgflow("eval", str(run), "--split", "test", "--checkpoint", which,
                                         "--out", str(out), "--device", device, "--no-plots"),
                                stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        if rc != 0:
            result["rc"] = rc
            return result
        result[which] = phase_summary(out / "scores.json")
    result["wall_s"] = round(time.time() - t0, 1)
    return result


def job_key(r: dict) -> tuple:
    return (r["data"], r["variant"], r["seed"])


def read_rows(results: Path) -> list:
    return [json.loads(x) for x in results.read_text().splitlines() if x.strip()]


def finished_jobs(results: Path) -> set:
    """(data, variant, seed) of the jobs with scores in `results`. A failed or killed job's row has
    none, so a second `run` retries it (resuming from its last.pt) instead of skipping it."""
    if not results.exists():
        return set()
    return {job_key(r) for r in read_rows(results) if "best" in r}


def cmd_run(args) -> None:
    work = Path(args.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    start = time.time()
    results = Path(args.results) if args.results else work / "results.jsonl"
    done = finished_jobs(results)

    def log(msg):
        print(f"[{time.time() - start:6.0f} s] {msg}", flush=True)

    plan = load_plan(Path(args.plan))
    jobs = [j for j in plan_jobs(plan) if (j["data"], j["variant"], j["seed"]) not in done]
    if args.data:
        jobs = [j for j in jobs if j["data"] in args.data.split(",")]
    if args.variants:
        jobs = [j for j in jobs if j["variant"] in args.variants.split(",")]
    if args.seeds:
        jobs = [j for j in jobs if str(j["seed"]) in args.seeds.split(",")]
    if args.limit_jobs:
        jobs = jobs[:args.limit_jobs]
    sizes: dict = {}
    for j in jobs:
        sizes.setdefault(j["data"], set()).add(j["size"])
    log(f"{len(jobs)} jobs to run ({len(done)} done before), data {', '.join(sizes)}")
    with cf.ProcessPoolExecutor(args.workers) as pool:
        per = max(1, (os.cpu_count() or 1) // max(len(sizes), 1))  # cores per dataset
        for f in cf.as_completed([pool.submit(make_data, work, d, plan["data"][d], s, print, per)
                                  for d, s in sizes.items()]):
            f.result()
    log("data ready")
    longest = 0.0
    pending = list(jobs)
    with cf.ThreadPoolExecutor(args.workers) as pool, open(results, "a") as out:
        running = set()
        while pending or running:
            while pending and len(running) < args.workers:
                left = args.deadline - (time.time() - start) if args.deadline else math.inf
                if left < max(longest * 1.1, args.min_job_s):
                    log(f"deadline: {len(pending)} job(s) not started ({left:.0f} s left, "
                        f"longest job {longest:.0f} s)")
                    pending = []
                    break
                job = pending.pop(0)
                running.add(pool.submit(run_job, job, plan, work, args.device))
            if not running:
                break
            finished, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for f in finished:
                r = f.result()
                longest = max(longest, r.get("wall_s", r["train_s"]))
                out.write(json.dumps(r) + "\n")
                out.flush()
                acc = (f"{r['best']['acc']:.2f} at best.pt, {r['last']['acc']:.2f} at last.pt"
                       if "last" in r else f"FAILED rc {r['rc']}")
                log(f"{r['data']} {r['variant']} seed {r['seed']}: test {acc}, "
                    f"late drop {r.get('late_drop', '-')}, late fall {r.get('late_fall', '-')}, "
                    f"{r.get('wall_s', r['train_s'])} s")
    log("grid done")


# ---------------------------------------------------------------- report
KEPT: dict = {}  # variant -> the checkpoint compared for it ("best" unless `report --last-pt`)


def kept(run: dict) -> dict:
    """Test scores of the checkpoint the run keeps: best.pt, or last.pt for `--last-pt` variants."""
    return run[KEPT.get(run["variant"], "best")]


def label(variant: str) -> str:
    return f"{variant} (last.pt)" if KEPT.get(variant) == "last" else variant


def kept_test_acc(run: dict) -> float:
    """Test accuracy of the checkpoint the tables compare (best.pt unless `--last-pt`)."""
    return kept(run)["acc"]


def late_drop_of(run: dict) -> float:
    return run["late_drop"]


def late_fall_of(run: dict) -> float:
    """From the recorded validation curve, so rows written before `late_fall` existed have it too."""
    return round(late_fall(run["val"]), 2)


def interval(p: dict) -> str:
    """A paired_difference result as "mean [95% interval]"."""
    return f"{p['mean']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]"


def versus(runs: list, reference_runs: list, key) -> str:
    """key(run) minus key(reference run) over the same training seeds: mean [95% interval] (n);
    a seed without its reference run drops out of the pairs, "-" under 2 pairs."""
    from surgflow.experiments.report import paired_difference

    ref = {r["seed"]: key(r) for r in reference_runs}
    p = paired_difference([key(r) for r in runs], [ref.get(r["seed"]) for r in runs])
    if p["n"] < 2:
        return "-"
    return f"{interval(p)} (n={p['n']})"


def cmd_report(args) -> None:
    rows = [r for p in args.results for r in read_rows(Path(p))]
    KEPT.update({v: "last" for v in args.last_pt.split(",") if v})
    ok = [r for r in rows if "best" in r]
    retried = {job_key(r) for r in ok}  # a failed row that a later run of the job replaced
    failed = [r for r in rows if "best" not in r and job_key(r) not in retried]
    groups: dict = {}
    for r in ok:
        groups.setdefault((r["data"], r["variant"]), []).append(r)
    print("| data | variant | seeds | test acc per seed (best.pt; last.pt where marked) | mean ± std | last.pt mean | "
          "lowest mean phase recall | worst late drop | worst late fall | minus reference, 95% interval | "
          "late drop minus reference | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (data, variant), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != args.reference, kv[0][1])):
        rs = sorted(rs, key=lambda r: r["seed"])
        acc = [kept_test_acc(r) for r in rs]
        last = [r["last"]["acc"] for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
        phases = rs[0]["best"]["recall"]
        rec = {p: statistics.mean(kept(r)["recall"][p] for r in rs) for p in phases}
        low = min(rec, key=rec.get)
        refs = [] if variant == args.reference else groups.get((data, args.reference), [])
        cmp = versus(rs, refs, kept_test_acc)
        cmp_drop = versus(rs, refs, late_drop_of)
        print(f"| {data} | {label(variant)} | {', '.join(str(r['seed']) for r in rs)} | "
              f"{', '.join(f'{a:.1f}' for a in acc)} | {statistics.mean(acc):.2f} ± {sd:.2f} | "
              f"{statistics.mean(last):.2f} | {low} {rec[low]:.1f} | "
              f"{max(r['late_drop'] for r in rs):.1f} | {max(late_fall_of(r) for r in rs):.1f} | "
              f"{cmp} | {cmp_drop} | "
              f"{min(r['train_s'] for r in rs):.0f}-{max(r['train_s'] for r in rs):.0f} |")
    pooled(groups, args.reference)
    for r in failed:
        print(f"\nFAILED: {r['data']} {r['variant']} seed {r['seed']} (rc {r['rc']})")


def pooled(groups: dict, reference: str) -> None:
    """Each variant minus the reference over every (dataset, seed) pair both ran: one verdict
    across data conditions, not only across the seeds of one dataset."""
    from surgflow.experiments.report import paired_difference

    lines = []
    for variant in sorted({v for _, v in groups} - {reference}):
        pairs = []  # (dataset, variant run, reference run)
        for (data, v), rs in sorted(groups.items()):
            if v == variant:
                ref = {r["seed"]: r for r in groups.get((data, reference), [])}
                pairs += [(data, r, ref[r["seed"]]) for r in rs if r["seed"] in ref]
        if len(pairs) < 2:
            continue
        cells = []
        for key in (kept_test_acc, late_drop_of, late_fall_of):
            p = paired_difference([key(a) for _, a, _ in pairs], [key(b) for _, _, b in pairs])
            lower = sum(key(a) < key(b) for _, a, b in pairs)
            cells.append(f"{interval(p)}, lower in {lower} of {p['n']}")
        datasets = sorted({d for d, _, _ in pairs})
        lines.append(f"| {label(variant)} | {', '.join(datasets)} | {len(pairs)} | {' | '.join(cells)} |")
    if lines:
        print(f"\nPooled over datasets, each variant minus {reference} paired by dataset and seed "
              "(mean [95% interval]):\n")
        print("| variant | datasets | pairs | test accuracy | late drop | late fall |")
        print("|---|---|---|---|---|---|")
        print("\n".join(lines))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("plan")
    r.add_argument("--work", required=True)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--deadline", type=float, default=0.0, help="seconds from the start; 0 = none")
    r.add_argument("--min-job-s", type=float, default=0.0,
                   help="time a job is assumed to take before one has finished")
    r.add_argument("--device", default="cpu")
    r.add_argument("--limit-jobs", type=int, default=0)
    r.add_argument("--data", default="", help="only these datasets of the plan (comma-separated)")
    r.add_argument("--variants", default="", help="only these variants (comma-separated)")
    r.add_argument("--seeds", default="", help="only these training seeds (comma-separated)")
    r.add_argument("--results", default="", help="results file (default: WORK/results.jsonl)")
    p = sub.add_parser("report")
    p.add_argument("results", nargs="+")
    p.add_argument("--reference", default="preset")
    p.add_argument("--last-pt", default="", help="variants compared by last.pt, not best.pt "
                   "(comma-separated: a recipe that keeps its last weights)")
    args = ap.parse_args(argv)
    cmd_run(args) if args.cmd == "run" else cmd_report(args)


if __name__ == "__main__":
    main()
