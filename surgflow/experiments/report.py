"""What every experiment report shares: seed statistics, paired differences, tables with units
and "±", training curves read from the trainer's metrics.csv, model comparison plots, and one
Markdown -> HTML path (the `markdown` package with its tables extension).

Statistics are over training seeds (sample std, ddof=1); paired differences pair the same seed of
two models (same data, same initial weights where the experiment shares them).
"""
from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from surgflow.io_utils import atomic_write_bytes, atomic_write_text

# two-sided 95% quantiles of Student's t (df 1..30); beyond, the normal value is close enough
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.960


def _finite(values: Sequence) -> np.ndarray:
    return np.asarray([float(x) for x in values if x is not None and math.isfinite(float(x))],
                      dtype=np.float64)


def seed_stats(values: Sequence) -> dict:
    """{"mean", "std" (sample, over seeds), "n", "values"}; NaN where undefined."""
    v = _finite(values)
    return {"mean": float(v.mean()) if v.size else float("nan"),
            "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
            "n": int(v.size), "values": [None if x is None else float(x) for x in values]}


def paired_difference(a: Sequence, b: Sequence) -> dict:
    """Per-seed differences a - b (pairs with a missing side dropped), their mean, sample std and
    95% t-interval of the mean; `exceeds_spread`: the interval excludes 0 (needs >= 2 pairs)."""
    pairs = [(float(x), float(y)) for x, y in zip(a, b)
             if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    d = np.asarray([x - y for x, y in pairs], dtype=np.float64)
    out = {"differences": d.tolist(), "n": int(d.size),
           "mean": float(d.mean()) if d.size else float("nan"),
           "std": float(d.std(ddof=1)) if d.size > 1 else float("nan"),
           "ci95": [float("nan"), float("nan")], "exceeds_spread": False}
    if d.size > 1:
        half = t975(d.size - 1) * out["std"] / math.sqrt(d.size)
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
        out["exceeds_spread"] = bool(out["ci95"][0] > 0 or out["ci95"][1] < 0)
    return out


def fmt(x, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.{digits}f}"


def fmt_pm(stats: Optional[Mapping], digits: int = 1) -> str:
    """"mean ± std" (std over seeds or videos, as the table says); mean only when std is undefined."""
    if not stats or stats.get("mean") is None or not math.isfinite(float(stats["mean"])):
        return "n/a"
    std = stats.get("std")
    if std is None or not math.isfinite(float(std)):
        return fmt(stats["mean"], digits)
    return f"{fmt(stats['mean'], digits)} ± {fmt(std, digits)}"


def fmt_diff(p: Mapping, digits: int = 1) -> str:
    """"+d [lo, hi]" for a paired difference (95% t-interval over seeds)."""
    if not p or not p.get("n"):
        return "n/a"
    lo, hi = p["ci95"]
    if not math.isfinite(lo):
        return f"{p['mean']:+.{digits}f}"
    return f"{p['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def md_table(headers: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    """Markdown table lines; cells are str()-ed, '|' inside a cell escaped."""
    def cell(c) -> str:
        return str(c).replace("|", "\\|")
    return (["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(map(cell, r)) + " |" for r in rows])


# --------------------------------------------------------------------------- Markdown -> HTML
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;"
          "line-height:1.45;color:#222}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#f0f0f0}"
          "td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}img{max-width:100%}"
          "code{background:#f4f4f4;padding:0 3px}")


def markdown_to_html(text: str, title: str = "surgflow report") -> str:
    """The report's Markdown as a standalone HTML page (tables, emphasis, code, images)."""
    import markdown  # heavy: markdown, only for report.html

    body = markdown.markdown(text, extensions=["tables", "sane_lists"], output_format="html")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_markdown(path: Path, text: str, title: str) -> tuple[Path, Path]:
    """Write PATH (.md) and its .html twin atomically."""
    path = Path(path)
    atomic_write_text(path, text)
    html_path = path.with_suffix(".html")
    atomic_write_text(html_path, markdown_to_html(text, title))
    return path, html_path


# --------------------------------------------------------------------------- training results
def read_metrics(run_dir) -> list[dict[str, float]]:
    """The trainer's metrics.csv (one row per validation/epoch) as floats; [] when absent.
    Empty cells (a metric not computed that epoch) are left out of the row."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(row)
    return rows


def curve(run_dir, key: str, x: str = "epoch") -> list[tuple[float, float]]:
    """(x, value) points of `key` from metrics.csv; the last row wins for a repeated x (resume)."""
    pts: dict[float, float] = {}
    for r in read_metrics(run_dir):
        if key in r and x in r and math.isfinite(r[key]):
            pts[r[x]] = r[key]
    return sorted(pts.items())


# --------------------------------------------------------------------------- plots
def _plt():
    import matplotlib  # heavy: matplotlib, only when a curve is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # heavy: after use("Agg")

    return plt


def save_figure(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def plot_training_curves(runs: Mapping[str, Sequence], panels: Sequence[tuple], path,
                         title: str = "training curves") -> Optional[Path]:
    """One figure, one panel per (metrics.csv key, axis label[, scale]), every model on each panel:
    the mean over its seeds' run dirs with a min-max band. None when no run has any of the keys."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    drawn = False
    for ax, (key, label, *scale) in zip(axes[0], panels):
        k = float(scale[0]) if scale else 1.0
        for i, (model, dirs) in enumerate(runs.items()):
            curves = [{x: y * k for x, y in curve(d, key)} for d in dirs]
            curves = [c for c in curves if c]
            if not curves:
                continue
            xs = sorted(set.intersection(*[set(c) for c in curves]))
            if not xs:
                continue
            ys = np.array([[c[x] for x in xs] for c in curves])
            color = f"C{i}"
            ax.plot(xs, ys.mean(0), color=color, marker="." if len(xs) < 40 else None,
                    label=f"{model} (n={len(curves)})")
            if len(curves) > 1:
                ax.fill_between(xs, ys.min(0), ys.max(0), color=color, alpha=0.2, lw=0)
            drawn = True
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title} (line: mean over seeds, band: min-max)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_model_comparison(values: Mapping[str, Mapping[str, Sequence]],
                          panels: Sequence[tuple[str, str]], path,
                          title: str = "models side by side") -> Path:
    """Bars: mean over seeds per model, error bar: sample std over seeds, dots: the seeds.
    values: {model: {metric: [one value per seed]}}; panels: (metric, axis label)."""
    plt = _plt()
    models = list(values)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 1.3 * len(models) + 1.5) * len(panels),
                                                       3.6), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        for i, m in enumerate(models):
            v = _finite(values[m].get(metric, []))
            if not v.size:
                continue
            ax.bar(i, v.mean(), color=f"C{i}", alpha=0.6,
                   yerr=v.std(ddof=1) if v.size > 1 else None, capsize=5)
            ax.scatter(np.full(v.size, i) + np.linspace(-0.15, 0.15, v.size), v, color="black", s=12,
                       zorder=3)
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title} (bar: mean, error bar: std over seeds, dots: seeds)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def relpath(path, root) -> str:
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
