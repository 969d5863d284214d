"""Sequence samplers: turn a PreparedDataset into batches of consecutive frames with labels.

Three ways to walk a dataset (docs/DOMAIN.md section 3):

* `LanesSampler` (carry-hidden, the paper's default): B lanes, each streams whole videos in order in
  chunks of T frames. The model carries each lane's hidden state from one chunk to the next and
  resets it where `Batch.new_video` is True. One epoch delivers every frame exactly once.
* `ClipSampler` ("shuffle"): B random clips of T frames per batch; the state is reset every batch.
* `iter_video_chunks` / `iter_whole_videos`: one whole video in order, for evaluation.

All of them are deterministic functions of (seed, epoch, rank) and yield `Batch` objects. The dataset
is only used through its contract (docs/ARCHITECTURE.md, "Prepared dataset"), so any object with
`videos`, `num_frames`, `read_frames`, `phase`, `tools`, `anticipation`, `size`, `tool_names` works.
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from surgflow.io_utils import SurgflowError
from surgflow.labels import ANTICIPATION_INSTRUMENTS, IGNORE_INDEX


@dataclass
class Batch:
    frames: Tensor  # uint8 [B, T, 3, H, W]
    phase: Tensor  # int64 [B, T], -1 where unlabelled or padding
    tools: Tensor  # float32 [B, T, K] (K may be 0)
    anticipation: Tensor  # float32 [B, T, I] minutes (I may be 0)
    valid: Tensor  # bool [B, T]; False on padding
    new_video: Tensor  # bool [B]; True: this lane starts a video at t=0 -> reset its state
    videos: list[str]  # per lane ("" for an idle lane)
    starts: Tensor  # int64 [B], frame index of t=0 within its video

    def _map(self, fn) -> "Batch":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: fn(v) if isinstance(v, Tensor) else list(v) for k, v in values.items()})

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Page-locked copy, so that `.to("cuda", non_blocking=True)` overlaps with compute."""
        return self._map(lambda t: t.pin_memory())

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]

    @property
    def seq_len(self) -> int:
        return self.frames.shape[1]


# A plan entry for one lane of one step: (video name or "" when idle, first frame index).
Entry = tuple[str, int]


class _Labels:
    """Per-video label arrays, computed once and cached (they are small: N x (1 + K + I) numbers)."""

    def __init__(self, dataset, horizon: float, instruments: Sequence[str]):
        self.dataset = dataset
        self.horizon = float(horizon)
        tool_names = list(getattr(dataset, "tool_names", []) or [])
        self.num_tools = len(tool_names)
        # Without tool labels (e.g. an MS-TCN layout) there is nothing to anticipate: I = 0.
        self.instruments = list(instruments) if tool_names else []
        missing = [i for i in self.instruments if i not in tool_names]
        if missing:
            raise SurgflowError(
                f"anticipation instruments {missing} are not tools of the dataset at "
                f"{getattr(dataset, 'root', '?')} (tools: {tool_names}); set task.instruments to a "
                f"subset of the dataset's tools"
            )
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __call__(self, video: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> phase int64 [N], tools float32 [N, K], anticipation float32 [N, I]."""
        with self._lock:  # worker threads share the cache; computing twice would be harmless but slow
            if video not in self._cache:
                self._cache[video] = self._load(video)
            return self._cache[video]

    def _load(self, video: str):
        ds = self.dataset
        n = ds.num_frames(video)
        phase = np.asarray(ds.phase(video), dtype=np.int64)
        tools = ds.tools(video) if self.num_tools else None
        if self.num_tools and tools is None:
            raise SurgflowError(f"video {video}: dataset lists tools {ds.tool_names} but has no tool "
                                f"labels for this video; re-run `surgflow prepare`")
        tools = np.zeros((n, 0), np.float32) if tools is None else np.asarray(tools, np.float32)
        if self.instruments:
            antic = np.asarray(ds.anticipation(video, self.horizon, self.instruments), np.float32)
        else:
            antic = np.zeros((n, 0), np.float32)
        for name, arr in (("phase", phase), ("tools", tools), ("anticipation", antic)):
            if len(arr) != n:
                raise SurgflowError(f"video {video}: {len(arr)} {name} labels for {n} frames; the "
                                    f"prepared dataset is inconsistent, re-run `surgflow prepare`")
        return phase, tools, antic


class _SequenceSampler:
    """Shared machinery: label cache, batch assembly from a plan, optional background prefetch."""

    def __init__(self, dataset, batch_size: int, seq_len: int, seed: int, rank: int, world_size: int,
                 horizon: float, instruments: Sequence[str], workers: int, pin_memory: bool):
        if batch_size < 1 or seq_len < 1:
            raise SurgflowError(f"batch size and sequence length must be >= 1, got "
                                f"{batch_size} and {seq_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise SurgflowError(f"rank {rank} is outside world size {world_size}")
        if workers < 0:
            raise SurgflowError(f"data.workers must be >= 0, got {workers}")
        self.videos = list(dataset.videos)
        if not self.videos:
            raise SurgflowError(f"the dataset at {getattr(dataset, 'root', '?')} has no videos in "
                                f"this subset; check the split")
        self.dataset = dataset
        self.batch_size, self.seq_len = int(batch_size), int(seq_len)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.workers, self.pin_memory = int(workers), bool(pin_memory)
        self.labels = _Labels(dataset, horizon, instruments)
        self.lengths = {v: int(dataset.num_frames(v)) for v in self.videos}
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self._plan(self.epoch))

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches of `epoch` from `start_step` on; skipped steps cost nothing (exact resume)."""
        plan = self._plan(int(epoch))  # list over steps of (entries [B], new_video [B])
        return self._run(plan[start_step:])

    def plan(self, epoch: int) -> list[tuple[list[Entry], list[bool]]]:
        """The steps of `epoch` without reading frames: per step (entries [B]: (video, start
        frame), "" for an idle lane; new_video [B]) (the input-path audit looks for padding)."""
        return self._plan(int(epoch))

    def _plan(self, epoch: int) -> list[tuple[list[Entry], list[bool]]]:
        raise NotImplementedError

    def _run(self, steps) -> Iterator[Batch]:
        if self.workers == 0:
            for entries, new_video in steps:
                yield self._make_batch(entries, new_video)
            return
        # Order-preserving prefetch: at most 2 x workers batches are in flight; results are taken
        # in submission order, so the stream is identical to workers=0.
        depth = 2 * self.workers
        with ThreadPoolExecutor(self.workers, thread_name_prefix="surgflow-sampler") as pool:
            pending: deque = deque()
            try:
                for entries, new_video in steps:
                    pending.append(pool.submit(self._make_batch, entries, new_video))
                    if len(pending) >= depth:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # consumer stopped early: drop queued work, let running reads finish
                for f in pending:
                    f.cancel()

    def _make_batch(self, entries: list[Entry], new_video: list[bool]) -> Batch:
        return make_batch(self.dataset, self.labels, entries, new_video, self.seq_len,
                          pin_memory=self.pin_memory)


def make_batch(dataset, labels: _Labels, entries: list[Entry], new_video: list[bool], seq_len: int,
               pin_memory: bool = False) -> Batch:
    """Read the frames and labels of B chunks of up to `seq_len` frames; pad the rest."""
    B, T = len(entries), seq_len
    H, W = (int(x) for x in dataset.size)
    K, I = labels.num_tools, len(labels.instruments)
    # Assembled in numpy: its strided uint8 copy (HWC -> CHW) is several times faster than torch's.
    frames = np.zeros((B, T, 3, H, W), np.uint8)
    phase = np.full((B, T), IGNORE_INDEX, np.int64)
    tools = np.zeros((B, T, K), np.float32)
    antic = np.zeros((B, T, I), np.float32)
    valid = np.zeros((B, T), bool)
    starts = np.zeros(B, np.int64)
    for b, (video, start) in enumerate(entries):
        if not video:  # idle lane: all padding
            continue
        stop = min(start + T, dataset.num_frames(video))
        n = stop - start
        rgb = np.asarray(dataset.read_frames(video, start, stop))  # uint8 [n, H, W, 3]
        if rgb.shape != (n, H, W, 3):
            raise SurgflowError(f"video {video}: read_frames({start}, {stop}) returned shape "
                                f"{rgb.shape}, expected {(n, H, W, 3)}; re-run `surgflow prepare`")
        frames[b, :n] = rgb.transpose(0, 3, 1, 2)  # [n, 3, H, W]
        ph, tl, an = labels(video)
        phase[b, :n], tools[b, :n], antic[b, :n] = ph[start:stop], tl[start:stop], an[start:stop]
        valid[b, :n] = True
        starts[b] = start
    batch = Batch(frames=torch.from_numpy(frames), phase=torch.from_numpy(phase),
                  tools=torch.from_numpy(tools), anticipation=torch.from_numpy(antic),
                  valid=torch.from_numpy(valid), new_video=torch.tensor(new_video, dtype=torch.bool),
                  videos=[v for v, _ in entries], starts=torch.from_numpy(starts))
    return batch.pin_memory() if pin_memory else batch


class LanesSampler(_SequenceSampler):
    """Carry-hidden sampling: B lanes, each streams whole videos in order in chunks of T frames.

    Per epoch the videos are shuffled with (seed, epoch) and dealt, longest first, to the lane with
    the fewest chunks so far, over all `world_size * lanes` lanes (rank r owns lanes r*B .. r*B+B-1).
    Every rank runs max-over-lanes steps, so `len()` is the same on every rank; a lane that has
    finished its videos yields idle chunks (videos[b] == "", valid all False, new_video True).
    A chunk never spans two videos: the last chunk of a video is padded (valid False, phase -1).
    `len()` does not depend on the epoch. With shuffle=False each lane streams in sorted order.
    """

    def __init__(self, dataset, lanes: int, seq_len: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, horizon: float = 3.0,
                 instruments: Sequence[str] = tuple(ANTICIPATION_INSTRUMENTS), shuffle: bool = True,
                 workers: int = 0, pin_memory: bool = False):
        super().__init__(dataset, lanes, seq_len, seed, rank, world_size, horizon, instruments,
                         workers, pin_memory)
        self.lanes = self.batch_size
        self.shuffle = bool(shuffle)
        self._plan_cache: tuple[int, list] | None = None

    def lane_videos(self, epoch: int) -> list[list[str]]:
        """Videos of every global lane (world_size * lanes of them) in streaming order.

        Longest-first greedy balancing (each video to the lane with the fewest chunks) on a
        (seed, epoch)-shuffled order: videos with equal chunk counts land in different lanes from
        epoch to epoch, while the lanes' loads, and so the number of steps, do not depend on the
        epoch. Then each lane's order and the lanes' placement over ranks are shuffled too.
        """
        chunks = {v: -(-self.lengths[v] // self.seq_len) for v in self.videos}  # ceil(N / T)
        order = [v for v in self.videos if chunks[v] > 0]  # an empty video has nothing to deliver
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        if rng is not None:
            order = [order[i] for i in rng.permutation(len(order))]
        n_lanes = self.world_size * self.lanes
        loads = [0] * n_lanes
        lanes: list[list[str]] = [[] for _ in range(n_lanes)]
        for v in sorted(order, key=lambda v: -chunks[v]):  # stable: ties keep the shuffled order
            lane = min(range(n_lanes), key=loads.__getitem__)  # fewest chunks, lowest index on ties
            lanes[lane].append(v)
            loads[lane] += chunks[v]
        if rng is None:  # no shuffling: each lane streams its videos in sorted order
            return [sorted(vids) for vids in lanes]
        lanes = [[vids[i] for i in rng.permutation(len(vids))] for vids in lanes]
        return [lanes[i] for i in rng.permutation(n_lanes)]

    def _plan(self, epoch: int):
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        T = self.seq_len
        # Per global lane: its chunks as (video, start) in streaming order.
        lane_chunks = [[(v, s) for v in vids for s in range(0, self.lengths[v], T)]
                       for vids in self.lane_videos(epoch)]
        steps = max(len(c) for c in lane_chunks)  # same on every rank: computed over all lanes
        mine = lane_chunks[self.rank * self.lanes:(self.rank + 1) * self.lanes]
        plan = []
        for step in range(steps):
            entries = [c[step] if step < len(c) else ("", 0) for c in mine]
            plan.append((entries, [v == "" or s == 0 for v, s in entries]))
        self._plan_cache = (epoch, plan)
        return plan


class ClipSampler(_SequenceSampler):
    """Random clips: each batch holds B clips of T consecutive frames, state reset every batch.

    Each clip picks a video with probability proportional to its frame count, then a uniform start
    within it; clips never cross a video; videos shorter than T give a single padded clip. Deterministic per (seed, epoch, rank). `steps_per_epoch` defaults to
    total frames // (B * T * world_size), at least 1, so that one epoch over all ranks draws about
    as many frames as the dataset has.
    """

    def __init__(self, dataset, batch_size: int, seq_len: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, steps_per_epoch: Optional[int] = None, horizon: float = 3.0,
                 instruments: Sequence[str] = tuple(ANTICIPATION_INSTRUMENTS), workers: int = 0,
                 pin_memory: bool = False):
        super().__init__(dataset, batch_size, seq_len, seed, rank, world_size, horizon, instruments,
                         workers, pin_memory)
        total = sum(self.lengths.values())
        if total == 0:
            raise SurgflowError(f"the dataset at {getattr(dataset, 'root', '?')} has no frames")
        if steps_per_epoch is None:
            steps_per_epoch = total // (self.batch_size * self.seq_len * self.world_size)
        self.steps_per_epoch = max(1, int(steps_per_epoch))

    def _plan(self, epoch: int):
        T, B = self.seq_len, self.batch_size
        n = np.array([self.lengths[v] for v in self.videos])
        positions = np.maximum(n - T + 1, 1)  # clip starts per video
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        shape = (self.steps_per_epoch, B)
        vid = rng.choice(len(n), size=shape, p=n / n.sum())  # videos in proportion to their length
        start = rng.integers(0, positions[vid])  # uniform over the chosen video's clip starts
        return [([(self.videos[v], int(s)) for v, s in zip(vid[i], start[i])], [True] * B)
                for i in range(self.steps_per_epoch)]


def iter_video_chunks(dataset, video: str, chunk: int, horizon: float = 3.0,
                      instruments: Sequence[str] = tuple(ANTICIPATION_INSTRUMENTS),
                      pad_last: bool = False, labels: Optional[_Labels] = None) -> Iterator[Batch]:
    """One whole video in order as B=1 batches of `chunk` frames; new_video only on the first.

    The last chunk is shorter (T = remaining frames) unless `pad_last`, which pads it to `chunk`
    frames with valid=False (useful for fixed-shape compiled or exported models).
    """
    if chunk < 1:
        raise SurgflowError(f"chunk must be >= 1, got {chunk}")
    labels = labels or _Labels(dataset, horizon, instruments)
    n = dataset.num_frames(video)
    for start in range(0, n, chunk):
        T = chunk if pad_last else min(chunk, n - start)
        yield make_batch(dataset, labels, [(video, start)], [start == 0], T)


def iter_whole_videos(dataset, chunk: int = 256, horizon: float = 3.0,
                      instruments: Sequence[str] = tuple(ANTICIPATION_INSTRUMENTS),
                      pad_last: bool = False) -> Iterator[tuple[str, Iterator[Batch]]]:
    """(video, iterator of its chunks) for every video of the dataset, in sorted order."""
    labels = _Labels(dataset, horizon, instruments)
    for video in dataset.videos:
        yield video, iter_video_chunks(dataset, video, chunk, pad_last=pad_last, labels=labels)
