"""The experiments' shared report module: seed statistics, paired t-intervals, metrics.csv curves,
Markdown rendered to real HTML, and the package layering (nothing below imports experiments)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from surgflow.experiments import report


def test_paired_difference_t_interval_matches_hand_computation():
    # differences 1, 2, 3: mean 2, sample std 1, t(0.975, df 2) = 4.303 -> half width 4.303/sqrt(3)
    p = report.paired_difference([11, 12, 13], [10, 10, 10])
    assert p["differences"] == [1.0, 2.0, 3.0] and p["mean"] == pytest.approx(2.0)
    assert p["std"] == pytest.approx(1.0)
    half = 4.303 / math.sqrt(3)
    assert p["ci95"] == pytest.approx([2.0 - half, 2.0 + half], abs=1e-9)
    assert p["exceeds_spread"] is False  # the interval [-0.48, 4.48] contains 0
    clear = report.paired_difference([5.0, 5.1, 4.9, 5.0], [1.0, 1.0, 1.1, 0.9])
    assert clear["exceeds_spread"] is True and clear["ci95"][0] > 0
    # a missing value drops its pair; one pair has no interval
    one = report.paired_difference([1.0, float("nan")], [0.5, 0.2])
    assert one["n"] == 1 and not one["exceeds_spread"] and math.isnan(one["ci95"][0])


def test_seed_stats_and_formatting():
    st = report.seed_stats([80.0, 90.0, None])
    assert st["mean"] == pytest.approx(85.0) and st["std"] == pytest.approx(math.sqrt(50))
    assert st["n"] == 2 and st["values"] == [80.0, 90.0, None]
    assert report.fmt_pm(st) == "85.0 ± 7.1"
    assert report.fmt_pm(report.seed_stats([3.0])) == "3.0"  # one seed: no spread to show
    assert report.fmt_diff(report.paired_difference([2, 3], [1, 1])).startswith("+1.5 [")


def test_markdown_renders_emphasis_code_tables_and_images():
    html = report.markdown_to_html("# T\n\n**bold** and `code`\n\n| a (%) | b |\n|---|---|\n"
                                   "| 1 ± 2 | x |\n\n![alt](p.png)\n")
    assert "<h1>T</h1>" in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "**" not in html and "`" not in html
    assert re.search(r"<th>a \(%\)</th>", html) and "<td>1 ± 2</td>" in html
    assert 'src="p.png"' in html and "charset='utf-8'" in html


def test_curves_come_from_metrics_csv(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/loss,val/accuracy\n1,10,0.9,50\n2,20,0.5,\n3,30,0.3,80\n")
    assert report.curve(tmp_path, "train/loss") == [(1.0, 0.9), (2.0, 0.5), (3.0, 0.3)]
    assert report.curve(tmp_path, "val/accuracy") == [(1.0, 50.0), (3.0, 80.0)]
    assert report.curve(tmp_path / "missing", "train/loss") == []
    png = report.plot_training_curves({"m": [tmp_path, tmp_path]}, [("train/loss", "loss")],
                                      tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert report.plot_training_curves({"m": [tmp_path]}, [("nope", "x")], tmp_path / "d.png") is None


def test_no_package_below_experiments_imports_it():
    root = Path(report.__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "experiments" not in p.parts and p.parent.name != "commands"
                 and re.search(r"^\s*(from|import) surgflow\.experiments", p.read_text(), re.M)]
    assert offenders == []
