import json
import threading

import numpy as np
import pytest

from surgflow.data.store import PreparedDataset
from surgflow.data.targets import anticipation_targets
from surgflow.io_utils import SurgflowError
from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES, CHOLEC80_TOOLS


def test_open_and_read(prepared_synthetic):
    ds = PreparedDataset(prepared_synthetic)
    assert ds.videos == [f"video{i:02d}" for i in range(1, 5)]
    assert ds.fps == 1.0 and ds.size == (64, 112)
    assert ds.phase_names == CHOLEC80_PHASES and ds.tool_names == CHOLEC80_TOOLS
    m = json.loads((prepared_synthetic / "manifest.json").read_text())
    for v in ds.videos:
        n = ds.num_frames(v)
        assert n == m["videos"][v]["frames"] >= 30
        p, t = ds.phase(v), ds.tools(v)
        assert p.dtype == np.int64 and p.shape == (n,) and p.min() >= 0 and p.max() < 7
        assert t.dtype == np.float32 and t.shape == (n, 7) and set(np.unique(t)) <= {0.0, 1.0}
    all_frames = ds.read_frames("video01", 0, ds.num_frames("video01"))
    assert all_frames.dtype == np.uint8 and all_frames.shape == (ds.num_frames("video01"), 64, 112, 3)
    # any range equals the same slice of the whole video
    np.testing.assert_array_equal(ds.read_frames("video01", 7, 19), all_frames[7:19])
    assert ds.read_frames("video01", 5, 5).shape == (0, 64, 112, 3)
    with pytest.raises(IndexError):
        ds.read_frames("video01", 0, ds.num_frames("video01") + 1)
    with pytest.raises(SurgflowError, match="not in"):
        ds.num_frames("video99")


def test_concurrent_reads(prepared_synthetic):
    ds = PreparedDataset(prepared_synthetic)
    ref = ds.read_frames("video03", 0, 10)
    results = [None] * 4

    def work(k):
        results[k] = ds.read_frames("video03", 0, 10)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(np.array_equal(r, ref) for r in results)


def test_anticipation_and_counts(prepared_synthetic):
    ds = PreparedDataset(prepared_synthetic)
    for v in ds.videos:
        a = ds.anticipation(v, 3.0, ANTICIPATION_INSTRUMENTS)
        cols = [CHOLEC80_TOOLS.index(i) for i in ANTICIPATION_INSTRUMENTS]
        np.testing.assert_array_equal(a, anticipation_targets(ds.tools(v)[:, cols] > 0.5, 1.0, 3.0))
        assert a.shape == (ds.num_frames(v), 5) and a.dtype == np.float32
        assert a.min() == 0.0 and a.max() <= 3.0
        assert (a[ds.tools(v)[:, cols] > 0.5] == 0).all()
    assert ds.anticipation("video01", 1.0, ["Clipper"]).shape[1] == 1
    with pytest.raises(SurgflowError, match="Hammer"):
        ds.anticipation("video01", 3.0, ["Hammer"])
    counts = ds.phase_counts()
    assert counts.dtype == np.int64 and counts.shape == (7,)
    assert counts.sum() == sum(ds.num_frames(v) for v in ds.videos) and (counts > 0).sum() >= 5


def test_splits_and_subsets(prepared_synthetic, tmp_path):
    ds = PreparedDataset(prepared_synthetic, split="auto")
    tr, va, te = ds.subset("train"), ds.subset("val"), ds.subset("test")
    assert (tr.videos, va.videos, te.videos) == (["video01", "video02"], ["video03"], ["video04"])
    assert PreparedDataset(prepared_synthetic, split="auto", subset="test").videos == ["video04"]
    assert tr.phase_counts().sum() == sum(tr.num_frames(v) for v in tr.videos)
    f = tmp_path / "split.yaml"
    f.write_text("train: [video04]\ntest: [video01, video02]\n")
    ds2 = PreparedDataset(prepared_synthetic, split=str(f))
    assert ds2.subset("train").videos == ["video04"] and ds2.subset("val").videos == []
    assert PreparedDataset(prepared_synthetic, split="all").subset("train").videos == ds.videos
    with pytest.raises(SurgflowError, match="needs videos numbered"):
        PreparedDataset(prepared_synthetic, split="cholec80_40_8_32")
    with pytest.raises(SurgflowError, match="subset"):
        ds.subset("training")


def test_not_prepared(tmp_path):
    with pytest.raises(SurgflowError, match="surgflow prepare"):
        PreparedDataset(tmp_path)
