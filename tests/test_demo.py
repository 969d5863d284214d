"""`surgflow demo --quick`: the CI smoke run of the main job, its guard on the output folder, its
aspect ratio, and the conclusion computed from paired per-seed differences."""
from __future__ import annotations

import json
import math

import pytest

from surgflow.cli import main
from surgflow.experiments import report
from surgflow.experiments.demo_report import COMPARISONS, conclusion


@pytest.mark.slow
def test_quick_demo_writes_a_complete_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    for heading in ("## Conclusion", "## Phase recognition", "## Instrument anticipation",
                    "## Paired differences per seed", "## Per test video", "### Training curves",
                    "### Models side by side", "### Phase ribbons, every test video", "## BatchNorm audit"):
        assert heading in md
    assert "train mode: NON-CAUSAL" in md and "accuracy (%)" in md and "wMAE (min)" in md
    assert " ± " in md and "+-" not in md
    # the BatchNorm model leaks in train mode, the GroupNorm model passes
    assert "BatchNorm (test_resnet, norm native): LEAKS" in md
    assert "BN-free (GroupNorm) (test_resnet, norm gn): passes" in md
    images = [line.split("](", 1)[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert all((out / p).is_file() for p in images)
    # a ribbon figure for every test video (2 in --quick), curves, comparison, 3 confusion matrices
    assert sum("ribbons_video" in p for p in images) == 2
    assert sum("confusion_" in p for p in images) == 3
    html = (out / "report.html").read_text()
    assert "<table>" in html and "<strong>" in html and "**" not in html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    for key in ("bn_free", "batchnorm", "batchnorm_cheat"):
        acc, wmae = summary["rows"][key]["accuracy"], summary["rows"][key]["wMAE"]
        assert len(acc["values"]) == 2 and 0 <= acc["mean"] <= 100
        assert math.isfinite(wmae["mean"]) and wmae["mean"] >= 0 and acc["std"] is not None
    comps = summary["paired_differences"]
    assert len(comps) == 4 and all(len(c["differences"]) == 2 for c in comps)
    bn_free = summary["rows"]["bn_free"]["accuracy"]["values"]
    bn = summary["rows"]["batchnorm"]["accuracy"]["values"]
    assert comps[0]["differences"] == pytest.approx([a - b for a, b in zip(bn_free, bn)])
    assert summary["conclusion"].startswith("Conclusion: ")
    for part in summary["conclusion"][len("Conclusion: "):].rstrip(".").split("; "):
        assert part[1:] in md
    assert (out / "runs" / "bn_free_seed0" / "checkpoints" / "best.pt").is_file()
    assert report.curve(out / "runs" / "batchnorm_seed1", "train/loss")
    # frames keep the 160x90 video's 16:9 aspect: stored (H, W) = (36, 64), not 64 tall x 36 wide
    from surgflow.data.store import PreparedDataset

    ds = PreparedDataset(out / "data" / "prepared")
    assert ds.size == (36, 64)
    assert ds.read_frames(ds.videos[0], 0, 1).shape == (1, 36, 64, 3)
    # the conclusion is drawn on the realistic profile, and the report says so; raw videos of
    # another profile or seed are not reused by a later demo in the same folder
    from dataclasses import replace

    from surgflow.experiments.demo import QUICK, _raw_matches

    raw = out / "data" / "raw"
    assert json.loads((raw / "synth.json").read_text())["profile"]["name"] == "realistic"
    assert "profile `realistic`" in md
    assert _raw_matches(raw, QUICK, 0)
    assert not _raw_matches(raw, replace(QUICK, profile="clean"), 0)
    assert not _raw_matches(raw, QUICK, 1)


def test_demo_refuses_a_folder_with_other_files(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert "not from `surgflow demo`" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "keep me"


def _comps(acc_diffs, wmae_diffs):
    out = []
    for a, b, what in COMPARISONS:
        for metric, unit, better, d in (("accuracy", "points", "higher", acc_diffs[a]),
                                        ("wMAE", "min", "lower", wmae_diffs[a])):
            p = report.paired_difference(d, [0.0] * len(d))
            out.append({"a": a, "b": b, "what": what, "metric": metric, "unit": unit, "better": better, **p})
    return out


def test_conclusion_says_whether_a_difference_exceeds_the_seed_spread():
    clear = conclusion(_comps({"bn_free": [10.0, 11.0, 12.0], "batchnorm_cheat": [1.0, -2.0, 1.5]},
                              {"bn_free": [-0.10, -0.12, -0.11], "batchnorm_cheat": [-0.05, -0.06, -0.04]}), 3)
    assert "the BN-free model is better than the BatchNorm model in eval mode on accuracy by 11.0 points" in clear
    assert "the BN-free model is better than the BatchNorm model in eval mode on wMAE by 0.110 min" in clear
    assert "the train-mode (cheating) evaluation and the BatchNorm model in eval mode differ by +0.2 points" in clear
    assert "the train-mode (cheating) evaluation is better than the BatchNorm model in eval mode on wMAE" in clear
    worse = conclusion(_comps({"bn_free": [-10.0, -11.0, -12.0], "batchnorm_cheat": [1.0, 2.0, 3.0]},
                              {"bn_free": [0.1, 0.12, 0.11], "batchnorm_cheat": [0.0, 0.1, -0.1]}), 3)
    assert "BN-free model is worse than the BatchNorm model in eval mode on accuracy" in worse
    assert "within the seed spread" in worse
    assert "no seed spread" in conclusion(_comps({"bn_free": [1.0], "batchnorm_cheat": [1.0]},
                                                 {"bn_free": [1.0], "batchnorm_cheat": [1.0]}), 1)


def test_report_says_where_the_weights_came_from():
    from dataclasses import replace

    from surgflow.experiments.demo import FULL
    from surgflow.experiments.demo_report import weights_words

    assert weights_words(FULL) == "from scratch"
    words = weights_words(replace(FULL, pretrained="/cache/tf_efficientnet_lite0.pth"))
    # a pretrained run was reported as "from scratch" before
    assert "from scratch" not in words and "tf_efficientnet_lite0.pth" in words
