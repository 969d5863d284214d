"""Evaluation plots (matplotlib, Agg backend): phase ribbons, confusion matrix, anticipation curves.

Every function writes PNGs atomically and returns their paths. Phase colours are fixed per phase
id (tab10/tab20), so the same phase has the same colour in every figure. With `non_causal` the
titles say NON-CAUSAL and file names start with `NONCAUSAL_`.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from surgflow.io_utils import atomic_write_bytes


def _plt():
    import matplotlib  # heavy: matplotlib, only when a plot is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # heavy: after use("Agg")

    return plt


def phase_colors(n: int) -> np.ndarray:
    """n RGBA colours [n, 4] for the phases (shared by the plots and the viewer)."""
    from matplotlib import colormaps  # heavy: matplotlib (the viewer takes colours only)

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N) for i in range(n)])


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _prefix(non_causal: bool) -> str:
    return "NONCAUSAL_" if non_causal else ""


def _title(text: str, label: str | None, non_causal: bool) -> str:
    marked = non_causal and not (label and "NON-CAUSAL" in label)  # the label may already say it
    parts = (["NON-CAUSAL"] if marked else []) + ([f"[{label}]"] if label else []) + [text]
    return " ".join(parts)


def phase_ribbons(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                  phase_names: Sequence[str], out_dir, fps: float = 1.0, label: str | None = None,
                  non_causal: bool = False, max_videos: int | None = None) -> list[Path]:
    """One PNG per video: ground-truth ribbon above the predicted ribbon, time in minutes."""
    plt = _plt()
    from matplotlib.colors import ListedColormap  # heavy: matplotlib
    from matplotlib.patches import Patch  # heavy: matplotlib

    out_dir = Path(out_dir)
    colors = phase_colors(len(phase_names))
    # index 0 = unlabelled (light grey), 1.. = phases
    cmap = ListedColormap(np.vstack([[0.9, 0.9, 0.9, 1.0], colors]))
    paths = []
    for v in list(gt)[:max_videos]:
        g = np.asarray(gt[v], dtype=np.int64)
        p = np.asarray(pred[v], dtype=np.int64)
        img = np.stack([g, p]) + 1
        fig, ax = plt.subplots(figsize=(10, 1.9))
        minutes = len(g) / fps / 60.0
        ax.imshow(img, aspect="auto", cmap=cmap, vmin=0, vmax=len(phase_names),
                  interpolation="nearest", extent=(0, minutes, 1.5, -0.5))
        ax.set_yticks([0, 1], ["ground truth", "prediction"])
        ax.set_xlabel("time (min)")
        acc = float((g[g >= 0] == p[g >= 0]).mean() * 100) if (g >= 0).any() else float("nan")
        ax.set_title(_title(f"{v}: accuracy {acc:.1f}%", label, non_causal), fontsize=10)
        handles = [Patch(color=colors[i], label=n) for i, n in enumerate(phase_names)]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.45),
                  ncol=min(4, len(phase_names)), fontsize=7, frameon=False)
        paths.append(_save(fig, out_dir / f"{_prefix(non_causal)}ribbon_{v}.png"))
    return paths


def confusion_matrix_plot(cm: np.ndarray, phase_names: Sequence[str], path,
                          label: str | None = None, non_causal: bool = False) -> Path:
    """Row-normalised confusion matrix (rows: ground truth), percentages printed in the cells."""
    plt = _plt()
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(phase_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
    im = ax.imshow(norm * 100, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of ground-truth row")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{norm[i, j] * 100:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), phase_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), phase_names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(_title("confusion (% of ground-truth row)", label, non_causal), fontsize=9)
    path = Path(path)
    if non_causal and not path.name.startswith("NONCAUSAL_"):
        path = path.with_name("NONCAUSAL_" + path.name)
    return _save(fig, path)


def anticipation_curves(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                        instruments: Sequence[str], horizon: float, out_dir, fps: float = 1.0,
                        label: str | None = None, non_causal: bool = False,
                        max_videos: int | None = None) -> list[Path]:
    """One PNG per video: per instrument, true vs predicted remaining time (minutes)."""
    plt = _plt()
    out_dir = Path(out_dir)
    paths = []
    k = len(instruments)
    for v in list(gt)[:max_videos]:
        g = np.asarray(gt[v], dtype=np.float64).reshape(-1, k)
        p = np.asarray(pred[v], dtype=np.float64).reshape(-1, k)
        t = np.arange(len(g)) / fps / 60.0
        fig, axes = plt.subplots(k, 1, figsize=(10, 1.3 * k + 0.6), sharex=True, squeeze=False)
        for i, name in enumerate(instruments):
            ax = axes[i, 0]
            ax.plot(t, g[:, i], color="black", lw=1.2, label="true")
            ax.plot(t, p[:, i], color="tab:red", lw=1.0, alpha=0.8, label="predicted")
            ax.set_ylim(-0.1 * horizon, 1.1 * horizon)
            ax.set_ylabel(f"{name}\n(min)", fontsize=8)
            if i == 0:
                ax.legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("time (min)")
        axes[0, 0].set_title(_title(f"{v}: remaining time until use (min), horizon {horizon:g} min",
                                    label, non_causal), fontsize=10)
        paths.append(_save(fig, out_dir / f"{_prefix(non_causal)}anticipation_{v}.png"))
    return paths


def phase_ribbons_compare(gt: Mapping[str, np.ndarray], preds: Mapping[str, Mapping[str, np.ndarray]],
                          phase_names: Sequence[str], out_dir, fps: float = 1.0,
                          title: str | None = None) -> list[Path]:
    """One PNG per video: the ground-truth ribbon above one ribbon per model (preds: {model label:
    {video: int [N]}}), each labelled with its accuracy; time in minutes."""
    plt = _plt()
    from matplotlib.colors import ListedColormap  # heavy: matplotlib
    from matplotlib.patches import Patch  # heavy: matplotlib

    out_dir = Path(out_dir)
    colors = phase_colors(len(phase_names))
    cmap = ListedColormap(np.vstack([[0.9, 0.9, 0.9, 1.0], colors]))
    paths = []
    for v in gt:
        g = np.asarray(gt[v], dtype=np.int64)
        rows, names = [g], ["ground truth"]
        for model, per_video in preds.items():
            p = np.asarray(per_video[v], dtype=np.int64)
            acc = float((g[g >= 0] == p[g >= 0]).mean() * 100) if (g >= 0).any() else float("nan")
            rows.append(p)
            names.append(f"{model}: {acc:.1f}%")
        fig, ax = plt.subplots(figsize=(10, 0.9 + 0.45 * len(rows)))
        minutes = len(g) / fps / 60.0
        ax.imshow(np.stack(rows) + 1, aspect="auto", cmap=cmap, vmin=0, vmax=len(phase_names),
                  interpolation="nearest", extent=(0, minutes, len(rows) - 0.5, -0.5))
        ax.set_yticks(range(len(rows)), names, fontsize=8)
        ax.set_xlabel("time (min)")
        ax.set_title(f"{v}: phases over time" + (f" ({title})" if title else ""), fontsize=10)
        handles = [Patch(color=colors[i], label=n) for i, n in enumerate(phase_names)]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.6 if len(rows) < 4 else -0.4),
                  ncol=min(4, len(phase_names)), fontsize=7, frameon=False)
        paths.append(_save(fig, out_dir / f"ribbons_{v}.png"))
    return paths
