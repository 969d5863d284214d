"""The BN audit: flags BatchNorm in train mode and non-causal heads, passes the safe models."""
from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SURGFLOW_NO_PROGRESS", "1")

from surgflow.audit.audit import audit_model  # noqa: E402
from surgflow.config import from_dict  # noqa: E402
from surgflow.io_utils import SurgflowError  # noqa: E402
from surgflow.models.model import build_model  # noqa: E402



SHAPE = (2, 8, 3, 32, 64)


def make(backbone="test_resnet", norm="native", head="lstm", tasks=("phase", "anticipation")):
    online = head not in ("bilstm", "tcn_centered")
    cfg = from_dict({"model": {"backbone": backbone, "norm": norm, "head": head, "hidden": 16,
                               "tcn_layers": 3, "tcn_maps": 8, "tcn_stages": 1},
                     "task": {"tasks": list(tasks), "online": online}})
    torch.manual_seed(0)
    return build_model(cfg, num_phases=7, num_tools=7, num_instruments=5).eval()


def finding(report, kind, mode):
    (f,) = [f for f in report.findings if f.kind == kind and f.mode == mode]
    return f


def test_flags_batchnorm_in_train_mode_only():
    model = make("test_resnet", "native", "lstm")
    r = audit_model(model, SHAPE)
    assert r.leaks
    c = finding(r, "causality", "train")
    assert c.leak and c.value > 1e-3
    assert "BatchNorm layers" in c.verdict and "sees the future" in c.verdict
    assert "frozen_bn" in c.fix and "gn" in c.fix
    assert finding(r, "batch_coupling", "train").leak
    # eval mode uses running statistics: causal and independent per sequence
    assert not finding(r, "causality", "eval").leak
    assert finding(r, "causality", "eval").value == pytest.approx(0.0, abs=1e-6)
    assert not finding(r, "batch_coupling", "eval").leak
    assert finding(r, "train_eval", "both").value > 0
    n_bn = sum(n.uses_batch_stats_in_train for n in r.norm_layers)
    assert n_bn > 0 and f"{n_bn} BatchNorm layers" in c.verdict
    assert not any(n.uses_batch_stats_in_eval for n in r.norm_layers)
    # auditing eval mode only: deployment is fine
    assert not audit_model(model, SHAPE, modes=("eval",)).leaks


@pytest.mark.parametrize("head", ["bilstm", "tcn_centered"])
def test_flags_non_causal_heads_in_any_mode(head):
    r = audit_model(make("test_convnext", "native", head), SHAPE)
    for mode in ("train", "eval"):
        f = finding(r, "causality", mode)
        assert f.leak, f.verdict
        assert "non-causal temporal head" in f.verdict and head in f.verdict
        assert "lstm, gru or tcn" in f.fix
        assert not finding(r, "batch_coupling", mode).leak  # no BN: sequences independent
    assert r.causal_claim is False


@pytest.mark.parametrize("backbone,norm,head", [
    ("test_convnext", "native", "lstm"),  # LayerNorm
    ("test_resnet", "gn", "gru"),  # GroupNorm
    ("test_nfnet", "native", "tcn"),  # norm-free
    ("test_resnet", "frozen_bn", "lstm"),  # BN with frozen statistics
])
def test_passes_safe_models(backbone, norm, head):
    r = audit_model(make(backbone, norm, head), SHAPE)
    assert not r.leaks, r.format()
    assert all(f.value < 1e-4 for f in r.findings if f.kind != "train_eval")
    assert not any(n.uses_batch_stats_in_train for n in r.norm_layers)
    assert r.summary().startswith("PASS")
    assert finding(r, "train_eval", "both").value < 1e-4  # same behaviour in both modes
    if norm == "frozen_bn":
        assert {n.kind for n in r.norm_layers} == {"frozen_bn"}
    if norm == "gn":
        assert any("GroupNorm" in n.kind for n in r.norm_layers)


def test_model_left_untouched():
    model = make("test_resnet", "native", "lstm").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    audit_model(model, SHAPE)
    assert model.training  # mode restored
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats not updated


def test_report_dict_and_text():
    r = audit_model(make("test_resnet", "native", "lstm"), SHAPE)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["leaks"] is True and d["input_shape"] == list(SHAPE)
    assert {f["kind"] for f in d["findings"]} == {"causality", "batch_coupling", "train_eval"}
    assert d["norm_counts"]
    text = r.format()
    assert "verdict: LEAK" in text and "fix:" in text


def test_bad_forward_says_what_to_pass():
    class NeedsMore(torch.nn.Module):
        def forward(self, frames, state=None, new_video=None):
            raise RuntimeError("expected 4 channels")

    with pytest.raises(SurgflowError, match="--size"):
        audit_model(NeedsMore(), SHAPE)
    with pytest.raises(SurgflowError, match="B >= 2"):
        audit_model(make("test_convnext"), (1, 8, 3, 32, 32))


# --------------------------------------------------------------------------- CLI
def _config(tmp_path, name, **model):
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"model": {"hidden": 16, **model},
                                 "task": {"tasks": ["anticipation"]}}))
    return str(p)


def test_cli_strict_and_json(tmp_path, capsys):
    from surgflow.cli import main

    bn = _config(tmp_path, "bn", backbone="test_resnet")
    js = tmp_path / "out" / "audit.json"
    assert main(["audit", bn, "--size", "64x32", "--strict", "--json", str(js)]) == 1
    out = capsys.readouterr().out
    assert "sees the future" in out and "verdict: LEAK" in out
    d = json.loads(js.read_text())
    assert d["leaks"] is True and d["source"].startswith("config")
    assert any(f["leak"] and f["mode"] == "train" for f in d["findings"])
    # the same model without --strict reports but exits 0; eval mode only passes
    assert main(["audit", bn, "--size", "64x32"]) == 0
    assert main(["audit", bn, "--size", "64x32", "--mode", "eval", "--strict"]) == 0
    # the fix, through --set, passes strict
    assert main(["audit", bn, "--size", "64x32", "--strict", "--set", "model.norm=frozen_bn"]) == 0
    ln = _config(tmp_path, "ln", backbone="test_convnext")
    assert main(["audit", ln, "--size", "64x32", "--strict"]) == 0
    # a non-causal head in an online config is still audited (and flagged)
    bi = _config(tmp_path, "bi", backbone="test_convnext", head="bilstm")
    assert main(["audit", bi, "--size", "64x32", "--strict", "--mode", "eval"]) == 1
    assert "not causal" in capsys.readouterr().out


def test_cli_bad_input(tmp_path, capsys):
    from surgflow.cli import main

    assert main(["audit", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    assert main(["audit", str(empty_run)]) == 2
    assert "checkpoint" in capsys.readouterr().err
    # a checkpoint whose config is missing
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}}, bad)
    assert main(["audit", str(bad)]) == 2
    assert "bad.pt" in capsys.readouterr().err
    # a checkpoint whose config does not fit this version
    worse = tmp_path / "worse.pt"
    torch.save({"model": {}, "config": {"model": {"colour": 1}}, "meta": {"phase_names": ["a"]}}, worse)
    assert main(["audit", str(worse)]) == 2
    err = capsys.readouterr().err
    assert "incompatible" in err and "worse.pt" in err
    assert main(["audit", _config(tmp_path, "c", backbone="test_convnext"), "--size", "32"]) == 2
    assert "--size" in capsys.readouterr().err


def test_cli_checkpoint_roundtrip(tmp_path, capsys):
    """A checkpoint in the documented format (config + model + meta) is rebuilt and audited."""
    from surgflow.cli import main
    from surgflow.config import to_dict

    cfg = from_dict({"model": {"backbone": "test_resnet", "norm": "frozen_bn", "hidden": 16},
                     "task": {"tasks": ["phase"]}})
    model = build_model(cfg, num_phases=7)
    ckpt = {"config": to_dict(cfg), "model": model.state_dict(),
            "meta": {"phase_names": [str(i) for i in range(7)], "tool_names": [], "instruments": []}}
    path = tmp_path / "m.pt"
    torch.save(ckpt, path)
    assert main(["audit", str(path), "--size", "64x32", "--strict"]) == 0
    assert "verdict: PASS" in capsys.readouterr().out
