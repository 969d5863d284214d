"""Each training strategy: batch shapes, a loss that decreases when fitting one batch, and the
full_context guarantees (same gradients as plain backprop for BN-free nets; BN refused)."""
from __future__ import annotations


import pytest
import torch

from _helpers import documented_names
from surgflow.config import load_config
from surgflow.io_utils import SurgflowError
from surgflow.training.runtime import clip_gradients
from surgflow.training.strategies import STRATEGIES, FeatureBatch, Strategy
from surgflow.training.trainer import Trainer


def _trainer(root, out, *extra) -> Trainer:
    cfg = load_config(None, [
        f"data.root={root}", "data.split=auto", "model.backbone=test_convnext", "model.hidden=32",
        "train.seq_len=8", "train.batch_size=2", "train.epochs=2", "train.lr=3e-3",
        "train.device=cpu", "data.augment=false", "train.micro_batch=4", *extra])
    return Trainer(cfg, out)


def _fit_one_batch(t: Trainer, batch, steps: int = 6) -> list[float]:
    losses = []
    for _ in range(steps):
        t.strategy.state = None  # same input every time
        t.optimizer.zero_grad(set_to_none=True)
        losses.append(t.strategy.train_step(batch).loss)
        t.optimizer.step()
    return losses


def test_the_documented_strategies_are_registered():
    documented = documented_names("STRATEGIES")
    assert len(documented) >= 4
    missing = set(documented) - set(STRATEGIES.names())
    assert not missing, f"docs/ARCHITECTURE.md promises strategies that are not registered: {missing}"


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_trains_and_resumes(tiny_root, tmp_path, name):
    """Each registered strategy: declares what the BN guard reads, draws the batches it counts,
    resumes mid-epoch at the same batch, and fits one batch (a loss that decreases)."""
    cls = STRATEGIES.get(name)
    assert issubclass(cls, Strategy) and cls.name == name
    assert isinstance(cls.consecutive_frames, bool)  # audit/guards.py reads it before building
    t = _trainer(tiny_root, tmp_path / name, f"train.strategy={name}", "train.two_stage_cnn_epochs=1")
    try:
        t.strategy.start_epoch(0)
        n = t.strategy.steps_per_epoch(0)
        batches = list(t.strategy.batches(0, 0))
        assert len(batches) == n and n >= 2
        b = batches[0]
        assert b.frames.dtype == torch.uint8
        # consecutive_frames: a batch puts T consecutive frames of a video through the CNN together
        # frames [B, T, 3, H, W]: B x T = 2 x 8 frames per step in every strategy
        T = b.frames.shape[1]
        assert T == (8 if cls.consecutive_frames else 1) and b.frames.shape[0] * T == 16
        assert b.frames.shape[2:] == (3, 32, 56)
        # resume position: batches(epoch, k) == batches(epoch)[k:]
        again = next(iter(t.strategy.batches(0, 1)))
        assert torch.equal(again.frames, batches[1].frames)
        t.strategy.state = None
        t.optimizer.zero_grad(set_to_none=True)
        r = t.strategy.train_step(b)
        assert r.frames == int(b.valid.sum()) and "phase" in r.logs
        if cls.consecutive_frames:
            assert bool(b.new_video.all())  # first batch of an epoch (and every clips batch) resets
            # a strategy that carries state (carry_hidden, full_context) continues its videos in
            # the next batch; one that does not (clips) starts new ones
            carried = t.strategy.state is not None
            assert carried == (not bool(batches[1].new_video.all()))
        losses = _fit_one_batch(t, b)
        assert losses[-1] < losses[0], losses
    finally:
        t.close()


def test_full_context_matches_plain_backprop(tiny_root, tmp_path):
    grads = {}
    for name in ("carry_hidden", "full_context"):
        torch.manual_seed(0)
        t = _trainer(tiny_root, tmp_path / name, f"train.strategy={name}", "train.seed=5")
        try:
            batch = next(iter(t.strategy.batches(0, 0)))
            t.optimizer.zero_grad(set_to_none=True)
            t.strategy.train_step(batch)
            grads[name] = torch.cat([p.grad.flatten() for p in t.model.parameters() if p.grad is not None])
        finally:
            t.close()
    a, b = grads["carry_hidden"], grads["full_context"]
    assert a.shape == b.shape
    assert float((a - b).norm() / a.norm()) <= 1e-5


def test_full_context_refuses_batchnorm(tiny_root, tmp_path):
    with pytest.raises(SurgflowError, match="BatchNorm"):
        _trainer(tiny_root, tmp_path / "bn", "train.strategy=full_context", "model.backbone=test_resnet")
    # frozen statistics make the recomputation exact again: accepted
    _trainer(tiny_root, tmp_path / "fbn", "train.strategy=full_context", "model.backbone=test_resnet",
             "model.norm=frozen_bn").close()


def test_two_stage(tiny_root, tmp_path):
    t = _trainer(tiny_root, tmp_path / "two", "train.strategy=two_stage", "train.two_stage_cnn_epochs=1")
    try:
        s = t.strategy
        # stage 1: single frames (B*T of them), frame-wise classifier, CNN trains
        s.start_epoch(0)
        b1 = next(iter(s.batches(0, 0)))
        assert b1.frames.shape == (16, 1, 3, 32, 56)
        losses = _fit_one_batch(t, b1)
        assert losses[-1] < losses[0], losses
        assert any(p.grad is not None for p in t.model.backbone.parameters())
        assert all(p.grad is None for p in t.model.head.parameters())  # stage 1 ignores the head
        # stage 2: whole-video feature sequences, CNN frozen
        s.start_epoch(1)
        fb = list(s.batches(1, 0))
        assert len(fb) == len(t.train_ds.videos) and all(isinstance(b, FeatureBatch) for b in fb)
        v = fb[0].videos[0]
        assert fb[0].feats.shape == (1, t.train_ds.num_frames(v), t.model.feature_dim)
        t.optimizer.zero_grad(set_to_none=True)
        losses = _fit_one_batch(t, fb[0])
        assert losses[-1] < losses[0], losses
        assert all(p.grad is None for p in t.model.backbone.parameters())
        assert any(p.grad is not None for p in t.model.head.parameters())
    finally:
        t.close()


def test_gradient_clipping():
    w = torch.nn.Parameter(torch.ones(4, 3))
    w.grad = torch.full((4, 3), 100.0)
    clip_gradients([w], agc=0.1)  # unit-wise: each row's grad norm <= 0.1 x its weight norm
    assert torch.allclose(w.grad.norm(dim=1), torch.full((4,), 0.1 * 3 ** 0.5), rtol=1e-4)
    w.grad = torch.full((4, 3), 100.0)
    norm = clip_gradients([w], grad_clip=1.0)
    assert norm == pytest.approx(100.0 * 12 ** 0.5, rel=1e-5)
    assert float(w.grad.norm()) == pytest.approx(1.0, rel=1e-4)
