"""The demo's report.md / report.html / summary.json, from the per-(model, seed) job results of
demo.py: tables with units and mean ± std over seeds, paired per-seed differences with 95%
t-intervals, a conclusion computed from them, a per-video table, training curves read from each
run's metrics.csv, a side-by-side comparison plot, ribbons for every test video, confusion matrices
and anticipation curves whose titles name the model. The models, table rows and training preset
are defined here and imported by demo.py (one import direction)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from surgflow.config import load_config, to_dict
from surgflow.evaluation import plots
from surgflow.evaluation.diagnostics import phase_diagnostics
from surgflow.evaluation.viewer import write_view
from surgflow.experiments import report as rep
from surgflow.io_utils import atomic_write_json

# -- definitions shared with demo.py (which imports them from here: one import direction) --
# model key -> (model.norm, title); rows of the tables: key -> (model key, cheat, evaluation)
MODELS = {"bn_free": ("gn", "BN-free (GroupNorm)"), "batchnorm": ("native", "BatchNorm")}
ROWS = {"bn_free": ("bn_free", False, "eval mode"),
        "batchnorm": ("batchnorm", False, "eval mode"),
        "batchnorm_cheat": ("batchnorm", True, "train mode: NON-CAUSAL")}


def row_title(row: str) -> str:
    key, cheat, _ = ROWS[row]
    return MODELS[key][1] + (" (train-mode BN, NON-CAUSAL)" if cheat else "")


PRESET = "synthetic_phase_tiny"  # the optimiser and lr schedule come from this tuned preset

PHASE_METRICS = (("accuracy", "accuracy (%)"), ("precision", "precision (%)"), ("recall", "recall (%)"),
                 ("jaccard", "Jaccard (%)"), ("f1", "F1 (%)"))
ANT_METRICS = (("inMAE", "inMAE (min)"), ("outMAE", "outMAE (min)"), ("wMAE", "wMAE (min)"))
# (a, b, what the difference a - b means)
COMPARISONS = (("bn_free", "batchnorm", "BN-free minus BatchNorm, both in eval mode"),
               ("batchnorm_cheat", "batchnorm", "BatchNorm train mode (NON-CAUSAL) minus its eval mode"))


def per_seed(results: list[dict]) -> dict:
    """{row: {"seeds": [...], metric: [value per seed]}} (phase video-wise means and anticipation)."""
    out: dict = {}
    for r in results:
        for row, e in r["evals"].items():
            d = out.setdefault(row, {"seeds": []})
            d["seeds"].append(r["seed"])
            for m, v in {**e["video"], **e["anticipation"]}.items():
                d.setdefault(m, []).append(v)
    return out


def comparisons(values: dict) -> list[dict]:
    res = []
    for a, b, what in COMPARISONS:
        for metric, unit, better in (("accuracy", "points", "higher"), ("wMAE", "min", "lower")):
            p = rep.paired_difference(values[a][metric], values[b][metric])
            res.append({"a": a, "b": b, "what": what, "metric": metric, "unit": unit,
                        "better": better, **p})
    return res


def conclusion(comps: list[dict], n_seeds: int) -> str:
    return "Conclusion: " + "; ".join(conclusion_parts(comps, n_seeds)) + "."


def conclusion_parts(comps: list[dict], n_seeds: int) -> list[str]:
    """Statements computed from the paired differences: a difference counts only where its 95%
    interval over seeds excludes zero."""
    if n_seeds < 2:
        return ["one seed per model, so there is no seed spread to compare a difference with; run "
                "with --seeds 3 or more before drawing one"]
    parts = []
    for c in comps:
        if not c["n"]:
            parts.append(f"{c['what']}: {c['metric']} undefined")
            continue
        d = c["mean"]
        better = (d > 0) == (c["better"] == "higher")
        lead = {"bn_free": "the BN-free model", "batchnorm_cheat": "the train-mode (cheating) evaluation"}[c["a"]]
        other = {"batchnorm": "the BatchNorm model in eval mode"}[c["b"]]
        if c["exceeds_spread"]:
            verdict = (f"{lead} is {'better' if better else 'worse'} than {other} on {c['metric']} "
                       f"by {abs(d):.{1 if c['unit'] == 'points' else 3}f} {c['unit']}; the 95% interval over "
                       f"{c['n']} seeds excludes 0, so the difference exceeds the seed spread")
        else:
            verdict = (f"{lead} and {other} differ by {d:+.{1 if c['unit'] == 'points' else 3}f} "
                       f"{c['unit']} on {c['metric']}, within the seed spread (the 95% interval over "
                       f"{c['n']} seeds contains 0): no difference is established")
        parts.append(verdict)
    return parts


def phase_section(L: list[str], results: list[dict], phase_names, n_seeds: int) -> dict:
    """Per-phase precision/recall/F1 (frames of all seeds and test videos pooled) and warnings for
    phases never predicted on some (test video, seed) pairs, per model row; appended to L.
    Returns {row: phase_diagnostics result} for summary.json."""
    out = {}
    for r in ROWS:
        evs = [(res["seed"], res["evals"][r]) for res in results if r in res["evals"]]
        gt = {f"{v} seed {s}": e["preds"][v]["gt_phase"] for s, e in evs for v in e["preds"]}
        pred = {f"{v} seed {s}": e["preds"][v]["phase"] for s, e in evs for v in e["preds"]}
        if gt:
            out[r] = phase_diagnostics(gt, pred, phase_names, unit="(test video, seed) pairs")
    if not out:
        return out
    L += ["", "## Per phase", "",
          f"Precision, recall and F1 (%) per phase over the frames of all test videos and {n_seeds} "
          "seed(s) pooled; a phase that the ground truth contains but a model never predicts on a "
          "video is listed below the table.", ""]
    L += rep.md_table(["phase"] + [f"{row_title(r)} {m}" for r in out for m in ("P", "R", "F1")],
                      [[name] + [("n/a" if not np.isfinite(out[r]["per_phase"][name][m]) else
                                  f"{out[r]['per_phase'][name][m]:.1f}")
                                 for r in out for m in ("precision", "recall", "f1")]
                       for name in phase_names])
    warn = [f"- **{row_title(r)}**: {w}" for r in out for w in out[r]["warnings"]]
    L += [""] + (warn or ["No phase of the ground truth goes unpredicted on any test video."])
    return out


def _stats_row(label: str, how: str, vals: dict, metrics, digits: int) -> list[str]:
    return [label, how] + [rep.fmt_pm(rep.seed_stats(vals[m]), digits) for m, _ in metrics]


def weights_words(s) -> str:
    """Where the backbone's weights came from, for the report's set-up paragraph."""
    if not s.pretrained:
        return "from scratch"
    return (f"initialised from the weights file `{Path(s.pretrained).name}`; the GroupNorm twin keeps "
            "only the BatchNorm affine parameters of those weights, not their statistics")


def write_report(out: Path, s, results: list[dict], audits: dict, timings: dict, quick: bool,
                 n_seeds: int, workers: int, split: Path) -> Path:
    out = Path(out)
    values = per_seed(results)
    comps = comparisons(values)
    concl = conclusion(comps, n_seeds)
    first = {row: next(r["evals"][row] for r in results if row in r["evals"]) for row in ROWS}
    seeds = values["bn_free"]["seeds"]
    ex = first["bn_free"]
    test_videos = sorted(ex["per_video"])
    preset = to_dict(load_config(PRESET))["train"]  # the recipe the report describes
    L = ["# surgflow demo report", ""]
    L += [f"Synthetic Cholec80-layout data: {s.videos} videos of {s.min_seconds}-{s.max_seconds} s "
          f"(160x90, 25 fps, `surgflow synth` profile `{s.profile}`), prepared at 1 fps and {s.size[1]}x{s.size[0]} px (WxH). Split "
          f"(`{split.name}`): {s.train_videos} train, {s.val_videos} validation, {s.test_videos} test "
          f"videos ({', '.join(test_videos)}). Both models: timm `{s.backbone}` ({weights_words(s)}) + a "
          f"1-layer LSTM (64 units), trained end to end with carried hidden state (`carry_hidden`, "
          f"{s.lanes} lane x T={s.seq_len} consecutive frames), phase recognition + instrument "
          f"anticipation (horizon {s.horizon:g} min), {s.epochs} epochs; optimiser and lr from the "
          f"`{PRESET}` preset: {_recipe(preset)}"
          + f". The only difference: **BatchNorm** (native) vs the same network with every BatchNorm "
          f"replaced by **GroupNorm** (BN-free). Seeds {', '.join(map(str, seeds))}; each seed "
          "changes the initial weights and the data order, not the data. " + _kept_words(preset), ""]
    L += ["## Conclusion (computed from the numbers)", ""]
    L += [f"- {p[0].upper()}{p[1:]}." for p in conclusion_parts(comps, n_seeds)] + [""]
    L += ["## Phase recognition on the test videos", "",
          f"Video-wise metrics (per test video, macro over phases in ground truth union prediction, "
          f"then the mean over the {s.test_videos} test videos), 1 fps, no relaxed boundaries. Each "
          f"cell: mean ± sample std over {n_seeds} seeds of that mean.", ""]
    L += rep.md_table(["model", "evaluation"] + [h for _, h in PHASE_METRICS],
                      [_stats_row(MODELS[ROWS[r][0]][1], ROWS[r][2], values[r], PHASE_METRICS, 1)
                       for r in ROWS])
    L += ["", "## Instrument anticipation on the test videos", "",
          "Errors in minutes per instrument over all test frames pooled, then the mean over "
          "instruments: inMAE on frames where the instrument appears within the horizon, outMAE where "
          f"it does not, wMAE = (inMAE + outMAE) / 2; lower is better. Mean ± std over {n_seeds} seeds.", ""]
    L += rep.md_table(["model", "evaluation"] + [h for _, h in ANT_METRICS],
                      [_stats_row(MODELS[ROWS[r][0]][1], ROWS[r][2], values[r], ANT_METRICS, 3)
                       for r in ROWS])
    L += ["", "## Paired differences per seed", "",
          "Same seed, same data: difference a - b per seed, its mean and the 95% t-interval over "
          "seeds. A difference exceeds the seed spread when the interval excludes 0.", ""]
    L += rep.md_table(
        ["comparison (a - b)", "metric", "per seed", "mean [95% interval]", "exceeds seed spread"],
        [[c["what"], f"{c['metric']} ({'points' if c['unit'] == 'points' else 'min'}, {c['better']} is better)",
          ", ".join(f"{d:+.{1 if c['unit'] == 'points' else 3}f}" for d in c["differences"]),
          rep.fmt_diff(c, 1 if c["unit"] == "points" else 3), "yes" if c["exceeds_spread"] else "no"]
         for c in comps])
    # per-video table: mean ± std over seeds per test video
    L += ["", "## Per test video", "",
          f"Phase accuracy (%) and anticipation wMAE (min) per test video, mean ± std over {n_seeds} seeds.", ""]
    pv_rows = []
    for v in test_videos:
        row = [v, str(ex["per_video"][v]["frames"])]
        for r in ROWS:
            accs = [res["evals"][r]["per_video"][v]["accuracy"] for res in results if r in res["evals"]]
            row.append(rep.fmt_pm(rep.seed_stats(accs), 1))
        for r in ROWS:
            w = [res["evals"][r]["per_video"][v]["wMAE"] for res in results if r in res["evals"]]
            row.append(rep.fmt_pm(rep.seed_stats(w), 3))
        pv_rows.append(row)
    short = {"bn_free": "BN-free", "batchnorm": "BN", "batchnorm_cheat": "BN train mode"}
    L += rep.md_table(["video", "frames"] + [f"{short[r]} accuracy (%)" for r in ROWS]
                      + [f"{short[r]} wMAE (min)" for r in ROWS], pv_rows)
    diags = phase_section(L, results, ex["phase_names"], n_seeds)

    # figures
    fig = out / "figures"
    runs = {MODELS[k][1]: [r["run_dir"] for r in results if r["key"] == k] for k in MODELS}
    curves = rep.plot_training_curves(
        runs, [("train/loss", "training loss (per epoch)"), ("val/accuracy", "validation accuracy (%)", 100),
               ("val/wMAE", "validation wMAE (min)")],
        fig / "training_curves.png", title=f"training curves, {', '.join(runs)}")
    compare = rep.plot_model_comparison(
        {row_title(r): values[r] for r in ROWS},
        [("accuracy", "test phase accuracy (%)"), ("wMAE", "test anticipation wMAE (min)")],
        fig / "model_comparison.png", title="test videos")
    L += ["", "## Figures", ""]
    if curves:
        L += ["### Training curves", "", f"![training curves]({rep.relpath(curves, out)})", "",
              "Per epoch, read from each run's metrics.csv: mean over seeds (line) and min-max (band).", ""]
    L += ["### Models side by side", "", f"![model comparison]({rep.relpath(compare, out)})", ""]
    L += ["### Phase ribbons, every test video", "",
          f"Ground truth and each model's prediction (seed {seeds[0]}), accuracy per row.", ""]
    preds = {row_title(r): {v: first[r]["preds"][v]["phase"] for v in test_videos} for r in ROWS}
    gt = {v: first["bn_free"]["preds"][v]["gt_phase"] for v in test_videos}
    for png in plots.phase_ribbons_compare(gt, preds, ex["phase_names"], fig / "ribbons",
                                           title=f"seed {seeds[0]}"):
        L.append(f"![{png.stem}]({rep.relpath(png, out)})")
        L.append("")
    L += ["### Confusion matrices", "", f"Summed over the {n_seeds} seeds and all test videos.", ""]
    for r in ROWS:
        cm = np.sum([np.asarray(res["evals"][r]["confusion"]) for res in results if r in res["evals"]], axis=0)
        png = plots.confusion_matrix_plot(cm, ex["phase_names"], fig / f"confusion_{r}.png",
                                          label=row_title(r), non_causal=ROWS[r][1])
        L += [f"![confusion {r}]({rep.relpath(png, out)})", ""]
    L += ["### Anticipation", "", f"True vs predicted remaining time until each instrument's next use "
          f"(minutes, capped at the horizon of {s.horizon:g} min), first test video, seed {seeds[0]}.", ""]
    v0 = test_videos[0]
    for r in ROWS:
        p = first[r]["preds"][v0]
        for png in plots.anticipation_curves({v0: p["gt_anticipation"]}, {v0: p["anticipation_min"]},
                                             ex["instruments"], s.horizon, fig / f"anticipation_{r}",
                                             label=row_title(r), non_causal=ROWS[r][1]):
            L += [f"![anticipation {r}]({rep.relpath(png, out)})", ""]
    L += _viewer_section(out, seeds[0])
    L += ["## BatchNorm audit", "", "Each model's first seed, `surgflow audit` checks.", ""]
    for key, a in audits.items():
        L.append(f"### {MODELS[key][1]} ({s.backbone}, norm {MODELS[key][0]}): {'LEAKS' if a.leaks else 'passes'}")
        L.append("")
        for f in a.findings:
            L.append(f"- {f.verdict.rstrip('.')}." + (f" Fix: {f.fix}" if getattr(f, "fix", None) else ""))
        L.append("")
    L += ["## Where things are", "",
          "- runs: `runs/<model>_seed<k>/` (config.yaml, metrics.csv, log.txt, tb/, checkpoints/)",
          "- evaluations: `eval/<row>_seed<k>/` (predictions, ground truth, scores JSON); audits: `audit/`",
          "- numbers of this report: `summary.json`", "",
          f"Wall time ({workers} training(s) in parallel): "
          + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ".", ""]
    if quick:
        L.append("This was `--quick`: a smoke test with tiny frames, few videos and 2 epochs; its "
                 "numbers mean little.")
    md, _ = rep.write_markdown(out / "report.md", "\n".join(L) + "\n", "surgflow demo report")
    atomic_write_json(out / "summary.json", {  # NaN -> null (io_utils.json_safe)
        "seeds": seeds, "rows": {r: {"title": row_title(r), "NON-CAUSAL": ROWS[r][1],
                                     **{m: rep.seed_stats(values[r][m])
                                        for m, _ in PHASE_METRICS + ANT_METRICS}} for r in ROWS},
        "paired_differences": comps, "conclusion": concl, "timings": timings,
        "phase_diagnostics": diags,
        "per_video": {r: {res["seed"]: res["evals"][r]["per_video"] for res in results if r in res["evals"]}
                      for r in ROWS}})
    return md


def _viewer_section(out: Path, seed: int) -> list[str]:
    """`surgflow view` of the seed's evaluations side by side (viewer/index.html) and its link;
    nothing when the evaluation folders are not there (a report rebuilt from results only)."""
    rows = [r for r in ROWS if any((out / "eval" / f"{r}_seed{seed}" / f).is_file()
                                   for f in ("scores.json", "NONCAUSAL_scores.json"))]
    if not rows:
        return []
    evals = [out / "eval" / f"{r}_seed{seed}" for r in rows]
    res = write_view(evals, out=out / "viewer", names=[row_title(r) for r in rows])
    return ["### Browse the predictions", "",
            f"[viewer/index.html]({rep.relpath(Path(res['html']), out)}): every test video of seed "
            f"{seed}, {', '.join(row_title(r) for r in rows)} side by side on one time axis, with the "
            f"frames (opens from disk, no server; {res['bytes'] / 1e6:.1f} MB). Made again from this "
            f"folder with `surgflow view {' '.join(rep.relpath(e, out) for e in evals)} --out viewer`.", ""]


def _recipe(t: dict) -> str:
    """The preset's optimiser, schedule and EMA in words (t: its train section)."""
    keys = ("optimizer", "lr", "weight_decay", "lr_schedule", "warmup_steps", "lr_min", "grad_clip")
    warmup = "" if t.get("ema_warmup", True) else ", from the first step"
    ema = (f", an EMA of the weights (decay {t['ema_decay']}{warmup}) validated and evaluated"
           if t.get("ema_decay") else "")
    return ", ".join(f"{k} {t[k]}" for k in keys if k in t) + ema


def _kept_words(t: dict) -> str:
    """Which checkpoint the test rows are of: the preset's train.keep (t: its train section)."""
    if t["keep"] == "last":
        return "Test rows are of the last checkpoint (the preset's `train.keep=last`)."
    return "Best checkpoint chosen on validation accuracy."
