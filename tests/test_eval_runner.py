"""`surgflow eval`: causal whole-video prediction with carried state, files re-scorable by
`surgflow score`, NON-CAUSAL marking of the cheat mode. A tiny hand-built model and dataset follow
the ARCHITECTURE.md contracts; one test trains and evaluates a real run when the trainer exists."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from surgflow.cli import main
from surgflow.evaluation import runner
from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES, CHOLEC80_TOOLS


class FakeDataset:
    def __init__(self, lengths=(13, 10), seed=0):
        rng = np.random.default_rng(seed)
        self.videos = [f"video{i + 1:02d}" for i in range(len(lengths))]
        self.fps, self.size = 1.0, (4, 6)
        self.phase_names, self.tool_names = list(CHOLEC80_PHASES), list(CHOLEC80_TOOLS)
        self._phase = {v: np.sort(rng.integers(0, 7, n)) for v, n in zip(self.videos, lengths)}
        self._tools = {v: (rng.random((n, 7)) < .4).astype(np.float32) for v, n in zip(self.videos, lengths)}
        self._frames = {v: rng.integers(0, 256, (n, *self.size, 3), dtype=np.uint8)
                        for v, n in zip(self.videos, lengths)}

    def num_frames(self, v):
        return len(self._phase[v])

    def read_frames(self, v, start, stop):
        return self._frames[v][start:stop]

    def phase(self, v):
        return self._phase[v]

    def tools(self, v):
        return self._tools[v]

    def anticipation(self, v, horizon, instruments):
        from surgflow.data.targets import anticipation_targets

        cols = [self.tool_names.index(i) for i in instruments]
        return anticipation_targets(self._tools[v][:, cols] > .5, self.fps, horizon)


class TinyModel(nn.Module):
    """Causal: logits from the running mean of BatchNorm'd per-frame colour features."""
    is_causal = True

    def __init__(self, P=7, K=7, I=5, horizon=3.0):
        super().__init__()
        torch.manual_seed(0)
        self.bn = nn.BatchNorm1d(3)
        self.out = nn.Linear(3, P + K + I)
        self.P, self.K, self.I, self.h = P, K, I, horizon

    def features(self, frames):  # [B, T, 3, H, W] uint8 or [0, 1] floats -> [B, T, 3]
        if frames.dtype == torch.uint8:  # the model contract: features() takes uint8 frames too
            frames = frames.float() / 255.0
        f = frames.mean(dim=(3, 4))
        B, T, _ = f.shape
        return self.bn(f.reshape(B * T, 3)).reshape(B, T, 3)

    def temporal(self, feats, state=None, new_video=None):
        B = feats.shape[0]
        s, n = state if state is not None else (feats.new_zeros(B, 3), feats.new_zeros(B))
        if new_video is not None:
            keep = (~new_video).float()
            s, n = s * keep[:, None], n * keep
        cs = s[:, None] + feats.cumsum(1)  # [B, T, 3]
        cn = n[:, None] + torch.arange(1, feats.shape[1] + 1, device=feats.device)
        y = self.out(cs / cn[..., None])
        out = {"phase": y[..., :self.P], "tools": y[..., self.P:self.P + self.K],
               "anticipation": y[..., self.P + self.K:]}
        return out, (cs[:, -1], cn[:, -1])

    def forward(self, frames, state=None, new_video=None):
        return self.temporal(self.features(frames), state, new_video)

    def decode(self, o):
        return {"phase_prob": o["phase"].softmax(-1), "tools_prob": o["tools"].sigmoid(),
                "anticipation_min": o["anticipation"].sigmoid() * self.h}


META = {"phase_names": list(CHOLEC80_PHASES), "tool_names": list(CHOLEC80_TOOLS),
        "instruments": list(ANTICIPATION_INSTRUMENTS), "horizon": 3.0, "fps": 1.0,
        "dataset_root": "fake", "split": "auto", "causal": True}


def _trained_bn_model():
    m = TinyModel()
    m.bn.running_mean.fill_(100.0)
    m.bn.running_var.fill_(900.0)
    return m.eval()


def test_state_carried_across_chunks_equals_one_pass():
    ds, m = FakeDataset(), _trained_bn_model()
    a = runner.predict_dataset(m, ds, None, META, chunk=4)
    b = runner.predict_dataset(m, ds, None, META, chunk=100)
    for v in ds.videos:
        assert a[v]["phase_prob"].shape == (ds.num_frames(v), 7)
        np.testing.assert_allclose(a[v]["phase_prob"], b[v]["phase_prob"], atol=1e-5)
        np.testing.assert_allclose(a[v]["anticipation_min"], b[v]["anticipation_min"], atol=1e-5)
        assert (a[v]["phase"] == a[v]["phase_prob"].argmax(1)).all()
        assert a[v]["gt_anticipation"].shape == (ds.num_frames(v), 5)


def test_causal_prefix_independence():
    # frame t's prediction must not change when later frames change
    ds, m = FakeDataset(), _trained_bn_model()
    a = runner.predict_dataset(m, ds, ["video01"], META, chunk=5)
    ds._frames["video01"][7:] = 255 - ds._frames["video01"][7:]
    b = runner.predict_dataset(m, ds, ["video01"], META, chunk=5)
    np.testing.assert_allclose(a["video01"]["phase_prob"][:7], b["video01"]["phase_prob"][:7], atol=1e-6)


def test_cheat_uses_batch_statistics_and_restores_the_model():
    ds, m = FakeDataset(), _trained_bn_model()
    before = m.bn.running_mean.clone()
    honest = runner.predict_dataset(m, ds, ["video01"], META, chunk=5)
    cheat = runner.predict_dataset(m, ds, ["video01"], META, chunk=5, cheat=True)
    assert not np.allclose(honest["video01"]["phase_prob"], cheat["video01"]["phase_prob"])
    assert torch.equal(m.bn.running_mean, before) and not m.training and not m.bn.training


def _patch_run(monkeypatch, ds):
    import surgflow.data.store as store
    import surgflow.runs as ckpt

    class Cfg:
        class train:
            seq_len = 4

    monkeypatch.setattr(ckpt, "load_model", lambda run, which="best", device="cpu", **_kw:
                        (_trained_bn_model().eval(), Cfg, dict(META)))
    monkeypatch.setattr(store, "PreparedDataset", lambda root, split="all", subset=None, **_kw: ds)


def test_evaluate_run_writes_rescorable_files(tmp_path, monkeypatch, capsys):
    ds = FakeDataset()
    _patch_run(monkeypatch, ds)
    res = runner.evaluate_run(tmp_path, split="test", plots=True)
    text = capsys.readouterr().out
    number_lines = [ln for ln in text.splitlines() if any(c.isdigit() for c in ln)]
    assert number_lines and all(ln.startswith("[test]") for ln in number_lines)
    assert set(res["scores"]) == {"phase", "tools", "anticipation"}
    assert res["phase"] is res["scores"]["phase"]
    saved = json.loads((tmp_path / "eval_test" / "scores.json").read_text())
    assert saved["scores"]["phase"]["protocol"]["split"] == "test"
    assert any(p.endswith("confusion.png") for p in res["plots"])
    # `surgflow score` on the written files reproduces the eval numbers
    out = tmp_path / "rescore.json"
    args = res["rescore"].split()[1:] + ["--json", str(out)]
    assert main(args) == 0
    again = json.loads(out.read_text())
    for m in ("accuracy", "jaccard", "f1"):
        assert again["video"][m]["mean"] == pytest.approx(res["scores"]["phase"]["video"][m]["mean"])
    pred_dir, gt_dir = res["predictions"], res["ground_truth"]
    assert main(["score", "tools", "--gt", gt_dir, "--pred", pred_dir, "--gt-fps", "1",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mAP"] == pytest.approx(res["scores"]["tools"]["mAP"], abs=1e-6)
    # the rates are recorded (issue 11.1) and the per-video tables written beside the JSON (11.8)
    assert json.loads((tmp_path / "eval_test" / "predictions" / "fps.json").read_text())["fps"] == 1.0
    rows = (tmp_path / "eval_test" / "scores.phase.per_video.csv").read_text().splitlines()
    assert rows[0].startswith("video,frames,accuracy") and len(rows) == 1 + len(ds.videos)
    assert (tmp_path / "eval_test" / "scores.anticipation.per_video.md").is_file()


def test_cheat_marks_every_output(tmp_path, monkeypatch, capsys):
    _patch_run(monkeypatch, FakeDataset(lengths=(12, 10)))  # no 1-frame chunk: BatchNorm1d needs 2
    assert main(["eval", str(tmp_path), "--cheat"]) == 0
    text = capsys.readouterr().out
    assert all("NON-CAUSAL" in ln for ln in text.splitlines() if ln.strip())
    out = tmp_path / "eval_test_NONCAUSAL"
    saved = json.loads((out / "NONCAUSAL_scores.json").read_text())
    assert saved["NON-CAUSAL"] and saved["scores"]["phase"]["protocol"]["NON-CAUSAL"]
    pngs = list((out / "plots").glob("*.png"))
    assert pngs and all(p.name.startswith("NONCAUSAL_") for p in pngs)


def test_real_run_eval_end_to_end(prepared_synthetic, tmp_path, capsys):
    """Real modules: train 2 steps (trainer), load the checkpoint, eval causally, re-score."""
    trainer = pytest.importorskip("surgflow.training.trainer")
    from surgflow.config import from_dict
    from surgflow.data.store import PreparedDataset
    from surgflow.runs import load_model

    cfg = from_dict({"data": {"root": str(prepared_synthetic), "split": "auto", "augment": False},
                     "model": {"backbone": "test_resnet", "hidden": 16},
                     "task": {"tasks": ["phase", "anticipation"]},
                     "train": {"seq_len": 8, "epochs": 1, "max_steps": 2, "device": "cpu"}})
    run = tmp_path / "run"
    trainer.train(cfg, run)
    res = runner.evaluate_run(run, split="test", plots=False)
    out = capsys.readouterr().out
    assert all(ln.startswith("[test]") for ln in out.splitlines() if ln.strip())
    assert set(res["scores"]) == {"phase", "anticipation"}
    n = sum(len(res["preds"][v]["phase"]) for v in res["preds"])
    assert res["scores"]["phase"]["protocol"]["num_frames"] == n
    # chunking does not change a causal model's eval-mode predictions (state carried)
    model, _, meta = load_model(run, "best")
    ds = PreparedDataset(meta["dataset_root"], split=meta["split"], subset="test")
    a = runner.predict_dataset(model, ds, ds.videos, meta, chunk=5)
    b = runner.predict_dataset(model, ds, ds.videos, meta, chunk=64)
    for v in ds.videos:
        np.testing.assert_allclose(a[v]["phase_prob"], b[v]["phase_prob"], atol=1e-4)
        np.testing.assert_allclose(a[v]["phase_prob"], res["preds"][v]["phase_prob"], atol=1e-4)
    # the files re-score to the same numbers
    again = tmp_path / "again.json"
    assert main(res["rescore"].split()[1:] + ["--json", str(again)]) == 0
    got = json.loads(again.read_text())["video"]["accuracy"]["mean"]
    assert got == pytest.approx(res["scores"]["phase"]["video"]["accuracy"]["mean"])
