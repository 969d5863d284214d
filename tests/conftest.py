"""Shared test setup: offline hub, no progress bars, and a small synthetic dataset (raw + prepared)
that every test module may reuse (session-scoped: built once per test process, ~2 s)."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["SURGFLOW_NO_PROGRESS"] = "1"

import pytest  # noqa: E402

import torch  # noqa: E402

# Tiny models and `-n 2` workers on 2 cores: more than one intra-op thread per process only
# oversubscribes the machine (measured 5-15x slower steps under load).
torch.set_num_threads(1)

SYNTH_VIDEOS = 4
SYNTH_SIZE = (72, 128)  # raw video H, W
PREPARED_SIZE = (64, 112)  # prepared frames H, W


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory):
    """Path of a raw synthetic dataset in the Cholec80 layout: video01..video04, 30-40 s each,
    128x72 h264 at 25 fps, with phase and tool annotation files."""
    from surgflow.data.synth import synthesize

    root = tmp_path_factory.mktemp("synthetic_raw")
    synthesize(root, videos=SYNTH_VIDEOS, seed=0, width=SYNTH_SIZE[1], height=SYNTH_SIZE[0],
               min_seconds=30, max_seconds=40, workers=1)
    return root


@pytest.fixture(scope="session")
def prepared_synthetic(synthetic_raw, tmp_path_factory):
    """Path of `synthetic_raw` prepared at 1 fps, 64x112 (H x W); open it with
    `surgflow.data.store.PreparedDataset(path, split="auto")` (videos 01-02 train, 03 val, 04 test)."""
    from surgflow.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared_synthetic")
    res = prepare("cholec80", synthetic_raw, out, fps=1.0, size=PREPARED_SIZE, workers=1)
    assert not res.failed, res.failed
    return out


@pytest.fixture(scope="session")
def tiny_root(synthetic_raw, tmp_path_factory):
    """`synthetic_raw` prepared at 32x56 (4x fewer pixels than prepared_synthetic): training tests."""
    from surgflow.data.prepare import prepare

    out = tmp_path_factory.mktemp("tiny32x56")
    res = prepare("cholec80", synthetic_raw, out, fps=1.0, size=(32, 56), workers=1)
    assert not res.failed, res.failed
    return out
