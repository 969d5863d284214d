"""The input-path audit (training/input_audit.py): builds sampler, augmentation and model as `surgflow
train` does, perturbs raw frames after t before augmentation, and must flag a leaky augmentation."""
from __future__ import annotations

import pytest

from _helpers import ClipMeanContrast
from surgflow.training.input_audit import FIX_AUGMENT, audit_input_path
from surgflow.config import load_config
from surgflow.data.augment import ClipAugment


def _cfg(root, *extra):
    return load_config(None, [
        f"data.root={root}", "data.split=auto", "data.augment=true", "model.backbone=test_resnet",
        "model.norm=gn", "model.hidden=16", "model.tcn_layers=3", "model.tcn_maps=8",
        "train.seq_len=6", "train.batch_size=2", "train.device=cpu", *extra])  # 40, 32 frames: padded


def _by_test(findings):
    return {f.kind.replace("input_", "").replace("path", "other"): f for f in findings}


def test_flags_the_leaky_augmentation_and_names_it(tiny_root):
    f = _by_test(audit_input_path(_cfg(tiny_root), augment=ClipMeanContrast(p_color=1.0), draws=2))
    assert f["future"].leak and f["future"].relative > 1e-3, f["future"]
    assert "augmentation (ClipMeanContrast)" in f["future"].verdict and f["future"].fix == FIX_AUGMENT
    assert f["padding"].leak and "augmentation" in f["padding"].verdict, f["padding"]


@pytest.mark.parametrize("augment", [ClipAugment(p_color=1.0), "config", None])
def test_passes_the_fixed_augmentation(tiny_root, augment):
    findings = audit_input_path(_cfg(tiny_root), augment=augment, draws=2)
    assert findings and not any(f.leak for f in findings), [f.verdict for f in findings]
    assert {"future", "padding"} <= set(_by_test(findings))


def test_model_path_leak_is_attributed_to_the_model(tiny_root):
    """BatchNorm in train mode leaks whatever the augmentation: the culprit is the model path.
    With more than one lane `surgflow train` refuses such a config (padding would enter the
    statistics), and the audit, which builds what training builds, says the same."""
    f = _by_test(audit_input_path(_cfg(tiny_root, "model.norm=native", "train.batch_size=1"),
                                  augment="config", draws=1))
    assert f["future"].leak and "model path" in f["future"].verdict
    from surgflow.io_utils import SurgflowError

    with pytest.raises(SurgflowError, match="frozen_bn or gn"):
        audit_input_path(_cfg(tiny_root, "model.norm=native"), augment="config", draws=1)


def test_offline_head_padding_is_masked(tiny_root):
    f = _by_test(audit_input_path(_cfg(tiny_root, "model.head=bilstm", "task.online=false"),
                                  augment="config", draws=1))
    assert not f["padding"].leak, f["padding"]
    assert not f["other"].leak and "offline" in f["other"].verdict  # future: not applicable


def test_cli_reports_the_input_path(tiny_root, tmp_path, capsys):
    from surgflow.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{root: {tiny_root}, split: auto}}\nmodel: {{backbone: test_resnet, "
                   "norm: gn, hidden: 16}\ntrain: {seq_len: 6, batch_size: 2, device: cpu}\n")
    assert main(["audit", str(cfg), "--strict", "--input-draws", "2"]) == 0
    out = capsys.readouterr().out
    assert "input_future" in out and "input_padding" in out and "verdict: PASS" in out
    missing = tmp_path / "m.yaml"
    missing.write_text("data: {root: /nonexistent}\nmodel: {backbone: test_resnet, norm: gn}\n")
    assert main(["audit", str(missing), "--strict"]) == 0
    assert "input path NOT audited" in capsys.readouterr().out


def test_cli_data_root_overrides_the_configs_dataset(tiny_root, tmp_path, capsys):
    from surgflow.cli import main

    moved = tmp_path / "m.yaml"  # data.root points where the data no longer is
    moved.write_text("data: {root: /nonexistent, split: auto}\nmodel: {backbone: test_resnet, "
                     "norm: gn, hidden: 16}\ntrain: {seq_len: 6, batch_size: 2, device: cpu}\n")
    assert main(["audit", str(moved), "--mode", "train", "--input-draws", "1",
                 "--data-root", str(tiny_root)]) == 0
    out = capsys.readouterr().out
    assert "input_future" in out and "input_padding" in out and "NOT audited" not in out
    assert main(["audit", str(moved), "--data-root", str(tmp_path)]) == 2  # no manifest.json
    assert "no manifest.json" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    assert main(["audit", str(run), "--data-root", str(tiny_root)]) == 2
    assert "config.yaml" in capsys.readouterr().err
