"""`surgflow demo --quick`: the CI smoke run of the main job, and its guard on the output folder."""
from __future__ import annotations

import json
import math

import pytest

from surgflow.cli import main
from surgflow.experiments.demo import conclusion
from surgflow.experiments.report import markdown_to_html


def test_quick_demo_writes_a_complete_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for heading in ("## Phase recognition", "## Instrument anticipation", "## BatchNorm audit", "## Plots"):
        assert heading in report
    assert "train mode: NON-CAUSAL" in report
    # the BatchNorm model leaks in train mode, the GroupNorm model passes
    assert "BatchNorm CNN-LSTM (test_resnet, norm native): LEAKS" in report
    assert "BN-free (GroupNorm) CNN-LSTM (test_resnet, norm gn): passes" in report
    # every image the report references exists
    images = [line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(images) == 9 and all((out / p).is_file() for p in images)
    assert "<table>" in (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    for key in ("bn_free", "batchnorm", "batchnorm_cheat"):
        acc = summary["scores"][key]["phase"]["video"]["accuracy"]["mean"]
        wmae = summary["scores"][key]["anticipation"]["mean"]["wMAE"]
        assert 0 <= acc <= 100 and math.isfinite(wmae) and wmae >= 0
    assert (out / "runs" / "bn_free" / "checkpoints" / "best.pt").is_file()
    # frames keep the 160x90 video's 16:9 aspect: stored (H, W) = (36, 64), not 64 tall x 36 wide
    from surgflow.data.store import PreparedDataset

    ds = PreparedDataset(out / "data" / "prepared")
    assert ds.size == (36, 64)
    assert ds.read_frames(ds.videos[0], 0, 1).shape == (1, 36, 64, 3)


def test_demo_refuses_a_folder_with_other_files(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert "not from `surgflow demo`" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "keep me"


@pytest.mark.parametrize("w, expect", [
    ({"batchnorm_cheat": 0.1, "batchnorm": 0.3, "bn_free": 0.2},
     ["looks better (wMAE 0.100)", "beats the honest BatchNorm model"]),
    ({"batchnorm_cheat": 0.4, "batchnorm": 0.3, "bn_free": 0.35},
     ["is not better than its eval-mode evaluation", "does not beat the honest BatchNorm model"]),
])
def test_conclusion_is_worded_from_the_numbers(w, expect):
    text = conclusion(w)
    for phrase in expect:
        assert phrase in text


def test_markdown_to_html_renders_tables_and_images():
    html = markdown_to_html("# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![x](p.png)\n")
    assert "<h1>T</h1>" in html and "<td>1</td>" in html and 'src="p.png"' in html
