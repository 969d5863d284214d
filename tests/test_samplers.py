"""Sequence samplers: exact frame coverage, lane semantics, determinism, sharding and resume.

Most tests use an in-memory fake dataset whose pixels encode (video index, frame index), so every
delivered frame can be traced back to its source. One test runs on a real prepared store.
"""
from __future__ import annotations

import itertools
import threading
from collections import Counter

import numpy as np
import pytest
import torch

from surgflow.data.samplers import (Batch, ClipSampler, LanesSampler, iter_video_chunks,
                                    iter_whole_videos)
from surgflow.io_utils import SurgflowError
from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES, CHOLEC80_TOOLS

H, W = 4, 6


class FakeDataset:
    """PreparedDataset contract in memory. Pixel channels: (video index, frame % 256, frame // 256)."""

    def __init__(self, lengths, with_tools=True):
        self.videos = [f"video{i:02d}" for i in range(len(lengths))]
        self.lengths = dict(zip(self.videos, lengths))
        self.fps, self.size = 1.0, (H, W)
        self.phase_names = list(CHOLEC80_PHASES)
        self.tool_names = list(CHOLEC80_TOOLS) if with_tools else []
        self.root = "<fake>"
        self.reads: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()

    def num_frames(self, v):
        return self.lengths[v]

    def read_frames(self, v, start, stop):
        assert 0 <= start <= stop <= self.lengths[v], (v, start, stop)
        with self._lock:
            self.reads.append((v, start, stop))
        idx = np.arange(start, stop)
        out = np.empty((stop - start, H, W, 3), np.uint8)
        out[..., 0] = self.videos.index(v) + 1  # +1: distinguishes real frames from zero padding
        out[..., 1] = (idx % 256)[:, None, None]
        out[..., 2] = (idx // 256)[:, None, None]
        return out

    def phase(self, v):
        p = (np.arange(self.lengths[v]) // 3 + self.videos.index(v)) % 7
        p[::11] = -1  # some unlabelled frames
        return p.astype(np.int64)

    def tools(self, v):
        if not self.tool_names:
            return None
        n = np.arange(self.lengths[v])[:, None] + np.arange(7)[None]
        return (n % 4 == 0).astype(np.float32)

    def anticipation(self, v, horizon, instruments):
        n = self.lengths[v]
        cols = [self.tool_names.index(i) for i in instruments]
        return (np.arange(n)[:, None] * 0.01 + np.array(cols)[None] + self.videos.index(v) * 100
                ).astype(np.float32).clip(0, None) % (horizon + 1)


def decode(batch: Batch, ds: FakeDataset):
    """(video, frame) of every valid frame, checking frames and labels against the source."""
    B, T = batch.valid.shape
    out = []
    for b in range(B):
        v = batch.videos[b]
        n_valid = int(batch.valid[b].sum())
        assert batch.valid[b, :n_valid].all(), "padding only at the end of a chunk"
        if n_valid < T:  # padding: zero pixels, ignored phase
            assert (batch.frames[b, n_valid:] == 0).all()
            assert (batch.phase[b, n_valid:] == -1).all()
        if not v:
            assert n_valid == 0 and batch.new_video[b]
            continue
        s = int(batch.starts[b])
        assert bool(batch.new_video[b]) == (s == 0) or batch.new_video.all()
        px = batch.frames[b, :n_valid, :, 0, 0].long()  # [n, 3]
        assert (px[:, 0] == ds.videos.index(v) + 1).all(), "frame from another video in the chunk"
        frames = (px[:, 1] + 256 * px[:, 2]).numpy()
        np.testing.assert_array_equal(frames, np.arange(s, s + n_valid))
        np.testing.assert_array_equal(batch.phase[b, :n_valid].numpy(), ds.phase(v)[s:s + n_valid])
        np.testing.assert_array_equal(batch.tools[b, :n_valid].numpy(), ds.tools(v)[s:s + n_valid])
        np.testing.assert_allclose(batch.anticipation[b, :n_valid].numpy(),
                                   ds.anticipation(v, 3.0, ANTICIPATION_INSTRUMENTS)[s:s + n_valid])
        out += [(v, int(f)) for f in frames]
    return out


def check_shapes(batch, B, T, K=7, I=5):
    assert batch.frames.shape == (B, T, 3, H, W) and batch.frames.dtype == torch.uint8
    assert batch.phase.shape == (B, T) and batch.phase.dtype == torch.int64
    assert batch.tools.shape == (B, T, K) and batch.tools.dtype == torch.float32
    assert batch.anticipation.shape == (B, T, I) and batch.anticipation.dtype == torch.float32
    assert batch.valid.shape == (B, T) and batch.valid.dtype == torch.bool
    assert batch.new_video.shape == (B,) and batch.new_video.dtype == torch.bool
    assert batch.starts.shape == (B,) and batch.starts.dtype == torch.int64
    assert len(batch.videos) == B


def all_frames(ds):
    return Counter((v, f) for v in ds.videos for f in range(ds.lengths[v]))


LENGTHS = [23, 5, 16, 40, 8, 1, 31]  # shorter than T, exact multiples of T, a single frame


@pytest.mark.parametrize("lanes,T", [(1, 8), (3, 8), (2, 5), (10, 4)])
def test_lanes_every_frame_once(lanes, T):
    ds = FakeDataset(LENGTHS)
    s = LanesSampler(ds, lanes=lanes, seq_len=T, seed=3)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        seen = Counter()
        n = 0
        for batch in s:
            check_shapes(batch, lanes, T)
            seen.update(decode(batch, ds))
            n += 1
        assert n == len(s)
        assert seen == all_frames(ds), "each frame exactly once per epoch"


def test_lanes_stream_videos_in_order_and_flag_starts():
    ds = FakeDataset(LENGTHS)
    T, B = 8, 3
    s = LanesSampler(ds, lanes=B, seq_len=T, seed=0)
    prev = [None] * B  # (video, start) of the lane's previous chunk
    lane_videos = [[] for _ in range(B)]
    for batch in s:
        for b in range(B):
            v, st = batch.videos[b], int(batch.starts[b])
            if v and st > 0:  # continuation: same video, next T frames, no reset
                assert prev[b] == (v, st - T) and not batch.new_video[b]
            if v and st == 0:
                assert batch.new_video[b]
                if prev[b] is not None and prev[b][0]:  # previous video of this lane ran to its end
                    assert prev[b][1] + T >= ds.lengths[prev[b][0]]
                lane_videos[b].append(v)
            if not v and prev[b] is not None and prev[b][0]:  # a lane goes idle after a video's end
                assert prev[b][1] + T >= ds.lengths[prev[b][0]]
            if prev[b] is not None and not prev[b][0]:
                assert not v, "an idle lane stays idle until the epoch ends"
            prev[b] = (v, st)
    assert lane_videos == s.lane_videos(0)
    # balanced: lane chunk counts differ by less than the longest video's chunk count
    loads = [sum(-(-ds.lengths[v] // T) for v in vids) for vids in lane_videos]
    assert max(loads) == len(s)
    assert max(loads) - min(loads) <= max(-(-n // T) for n in LENGTHS)


def test_lanes_deterministic_shuffle():
    ds = FakeDataset(LENGTHS)

    def order(seed, epoch, shuffle=True):
        return LanesSampler(ds, lanes=1, seq_len=8, seed=seed, shuffle=shuffle).lane_videos(epoch)[0]

    assert order(0, 0) == order(0, 0)
    assert sorted(order(0, 0)) == ds.videos
    assert order(0, 0) != order(0, 1) or order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1) or order(0, 2) != order(1, 2)
    assert order(5, 3, shuffle=False) == ds.videos
    a = [b.frames for b in LanesSampler(ds, 2, 8, seed=7).iter_epoch(4)]
    b = [b.frames for b in LanesSampler(ds, 2, 8, seed=7).iter_epoch(4)]
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("lanes", [1, 2])
def test_lanes_distributed_ranks_partition_the_epoch(lanes):
    ds = FakeDataset(LENGTHS + [12, 3, 27])
    ranks = [LanesSampler(ds, lanes=lanes, seq_len=6, seed=1, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0
    seen = Counter()
    for s in ranks:
        batches = list(s.iter_epoch(2))
        assert len(batches) == len(s)
        for batch in batches:
            seen.update(decode(batch, ds))
    assert seen == all_frames(ds)
    # both ranks derive the same global lane assignment
    assert ranks[0].lane_videos(2) == ranks[1].lane_videos(2)


def test_lanes_more_lanes_than_videos_idle_lanes():
    ds = FakeDataset([5, 3])
    s = LanesSampler(ds, lanes=4, seq_len=4, seed=0)
    batches = list(s)
    assert len(batches) == 2
    idle = [b for b in range(4) if not batches[0].videos[b]]
    assert len(idle) == 2
    for batch in batches:
        for b in idle:
            assert batch.videos[b] == "" and batch.new_video[b] and not batch.valid[b].any()
    assert Counter(itertools.chain.from_iterable(decode(b, ds) for b in batches)) == all_frames(ds)


def test_lanes_resume_skips_without_reading():
    ds = FakeDataset(LENGTHS)
    s = LanesSampler(ds, lanes=2, seq_len=8, seed=2)
    full = list(s.iter_epoch(1))
    ds.reads.clear()
    tail = list(s.iter_epoch(1, start_step=3))
    assert len(tail) == len(full) - 3
    for a, b in zip(full[3:], tail):
        assert torch.equal(a.frames, b.frames) and a.videos == b.videos
        assert torch.equal(a.new_video, b.new_video) and torch.equal(a.starts, b.starts)
    read_starts = {(v, st) for v, st, _ in ds.reads}
    skipped = {(v, int(st)) for batch in full[:3] for v, st in zip(batch.videos, batch.starts) if v}
    assert not (read_starts & skipped), "skipped steps must not read frames"
    assert list(s.iter_epoch(1, start_step=len(s))) == []


def test_lanes_workers_same_stream_and_early_stop():
    ds = FakeDataset(LENGTHS * 2)
    ref = list(LanesSampler(ds, lanes=2, seq_len=4, seed=9, workers=0).iter_epoch(0))
    s = LanesSampler(ds, lanes=2, seq_len=4, seed=9, workers=2)
    got = list(s.iter_epoch(0))
    assert len(got) == len(ref)
    for a, b in zip(ref, got):
        assert torch.equal(a.frames, b.frames) and torch.equal(a.phase, b.phase)
        assert a.videos == b.videos and torch.equal(a.new_video, b.new_video)
    # stopping early shuts the prefetch threads down
    it = s.iter_epoch(0)
    next(it)
    workers = [t for t in threading.enumerate() if t.name.startswith("surgflow-sampler")]
    assert workers
    it.close()
    for t in workers:
        t.join(timeout=5)
        assert not t.is_alive()


def test_clip_sampler():
    ds = FakeDataset(LENGTHS)
    T, B = 8, 3
    s = ClipSampler(ds, batch_size=B, seq_len=T, seed=4)
    assert len(s) == sum(LENGTHS) // (B * T)
    starts_per_video = Counter()
    for epoch in range(3):
        for batch in s.iter_epoch(epoch):
            check_shapes(batch, B, T)
            assert batch.new_video.all()
            decode(batch, ds)  # consecutive frames of one video, labels aligned
            for b in range(B):
                v, n = batch.videos[b], int(batch.valid[b].sum())
                assert n == min(T, ds.lengths[v])  # full clips; short videos padded
                starts_per_video[v] += 1
    # videos are drawn in proportion to their length
    many = ClipSampler(ds, batch_size=4, seq_len=T, seed=0, steps_per_epoch=500)
    counts = Counter(v for batch in many.iter_epoch(0) for v in batch.videos)
    expected = {v: 2000 * n / sum(LENGTHS) for v, n in ds.lengths.items()}
    assert set(counts) == set(ds.videos)
    assert all(abs(counts[v] - e) < 4 * e ** 0.5 + 2 for v, e in expected.items()), (counts, expected)

    def frames(seed, epoch, rank):
        sampler = ClipSampler(ds, B, T, seed=seed, rank=rank, world_size=2, steps_per_epoch=5)
        return torch.stack([b.frames for b in sampler.iter_epoch(epoch)])

    assert torch.equal(frames(0, 1, 0), frames(0, 1, 0))
    assert not torch.equal(frames(0, 1, 0), frames(0, 1, 1))
    assert not torch.equal(frames(0, 1, 0), frames(0, 2, 0))
    assert not torch.equal(frames(0, 1, 0), frames(1, 1, 0))
    assert len(ClipSampler(ds, 64, 64)) == 1  # at least one step
    s2 = ClipSampler(ds, B, T, seed=4, steps_per_epoch=6)
    full = list(s2.iter_epoch(2))
    tail = list(s2.iter_epoch(2, start_step=4))
    assert len(tail) == 2 and all(torch.equal(a.frames, b.frames) for a, b in zip(full[4:], tail))


def test_iter_video_chunks_and_whole_videos():
    ds = FakeDataset(LENGTHS)
    chunks = list(iter_video_chunks(ds, "video00", chunk=10))
    assert [c.seq_len for c in chunks] == [10, 10, 3]
    assert [bool(c.new_video[0]) for c in chunks] == [True, False, False]
    got = list(itertools.chain.from_iterable(decode(c, ds) for c in chunks))
    assert got == [("video00", f) for f in range(23)]
    padded = list(iter_video_chunks(ds, "video00", chunk=10, pad_last=True))
    assert [c.seq_len for c in padded] == [10, 10, 10] and int(padded[-1].valid.sum()) == 3
    seen = []
    for video, it in iter_whole_videos(ds, chunk=7):
        frames = [f for c in it for v, f in decode(c, ds) if v == video]
        seen.append((video, frames))
    assert [v for v, _ in seen] == ds.videos
    assert all(f == list(range(ds.lengths[v])) for v, f in seen)


def test_dataset_without_tools_and_bad_input():
    ds = FakeDataset([9, 4], with_tools=False)
    batch = next(iter(LanesSampler(ds, 2, 4)))
    assert batch.tools.shape == (2, 4, 0) and batch.anticipation.shape == (2, 4, 0)
    with pytest.raises(SurgflowError, match="Knife"):
        LanesSampler(FakeDataset([9]), 1, 4, instruments=["Clipper", "Knife"])
    sub = LanesSampler(FakeDataset([9]), 1, 4, instruments=["Clipper"])
    assert next(iter(sub)).anticipation.shape == (1, 4, 1)
    empty = FakeDataset([])
    with pytest.raises(SurgflowError, match="no videos"):
        LanesSampler(empty, 1, 4)
    with pytest.raises(SurgflowError, match="rank"):
        LanesSampler(FakeDataset([9]), 1, 4, rank=2, world_size=2)


def test_batch_to_device():
    ds = FakeDataset([9, 4])
    batch = next(iter(LanesSampler(ds, 2, 4)))
    moved = batch.to("meta")
    assert isinstance(moved, Batch) and moved.frames.device.type == "meta"
    assert moved.frames.shape == batch.frames.shape and moved.videos == batch.videos
    assert moved.videos is not batch.videos
    assert batch.frames.device.type == "cpu"  # original untouched


def test_lanes_on_prepared_synthetic_store(prepared_synthetic):
    """The real PreparedDataset: the carry-hidden epoch delivers every stored frame exactly once."""
    from surgflow.data.store import PreparedDataset

    ds = PreparedDataset(prepared_synthetic)
    T = 16
    s = LanesSampler(ds, lanes=2, seq_len=T, seed=0, workers=1)
    H, W = ds.size
    delivered = Counter()
    for batch in s:
        assert batch.frames.shape == (2, T, 3, H, W)
        assert batch.tools.shape[-1] == len(ds.tool_names)
        assert batch.anticipation.shape[-1] == 5  # default instruments, minutes in [0, h]
        assert batch.anticipation.min() >= 0 and batch.anticipation.max() <= 3.0
        for b, v in enumerate(batch.videos):
            if not v:
                continue
            start, n = int(batch.starts[b]), int(batch.valid[b].sum())
            # frames and labels equal a direct read of the same range
            ref = torch.from_numpy(np.asarray(ds.read_frames(v, start, start + n))).permute(0, 3, 1, 2)
            assert torch.equal(batch.frames[b, :n], ref)
            np.testing.assert_array_equal(batch.phase[b, :n].numpy(), ds.phase(v)[start:start + n])
            delivered.update((v, f) for f in range(start, start + n))
    assert delivered == Counter((v, f) for v in ds.videos for f in range(ds.num_frames(v)))
