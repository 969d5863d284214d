"""Open a prepared dataset (output of `surgflow prepare`) by split and read frame ranges + labels.

    ds = PreparedDataset(root, split="auto", subset="train")
    frames = ds.read_frames("video01", 0, 64)      # uint8 [64, H, W, 3] RGB
    ds.phase("video01"), ds.tools("video01"), ds.anticipation("video01", 3.0, instruments)

Frames are stored as packed JPEGs (one file per video + byte offsets), memory-mapped and decoded on
demand, so any range is one contiguous read; reads are thread-safe. Label arrays are read without
pickle and checked (dtype, length, phase ids): a damaged file is a SurgflowError naming it and the
fix. Opening a store says (`warnings.warn(..., DatasetWarning)`, or the `log` callable given: the
trainer's log) which videos are missing and why (`prepare` failed for them) and which kept earlier
data after a failed redo; `auto` splits keep the missing videos' places (surgflow/data/splits.py).
"""
from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from surgflow.data.splits import SUBSETS, split_holes
from surgflow.data.store_format import MANIFEST, STORAGE, decode_jpeg
from surgflow.data.targets import anticipation_targets
from surgflow.io_utils import SurgflowError
from surgflow.labels import ANTICIPATION_INSTRUMENTS


class DatasetWarning(UserWarning):
    """Something about a prepared dataset the user must know (e.g. videos prepare could not do)."""


def missing_videos(manifest: dict) -> dict[str, str]:
    """{video: why} for the videos a manifest knows but cannot serve: `prepare` failed for them
    (the manifest's `failed` messages) or their entry is not complete."""
    entries = manifest.get("videos", {})
    out = {v: f"`surgflow prepare` failed for it: {why}" for v, why in
           manifest.get("failed", {}).items() if entries.get(v, {}).get("status") != "done"}
    for v, e in entries.items():
        if e.get("status") != "done":
            out.setdefault(v, f"prepare left it {e.get('status')!r}, not done")
    return dict(sorted(out.items()))


class StoreArrayError(ValueError):
    """A store's .npy file is not what prepare writes (message: the file and what is wrong)."""


def load_store_array(path: Path, n: int, num_phases: int, num_tools: int) -> np.ndarray:
    """index.npy int64 [N + 1], phase.npy int [N] in [-1, P), tools.npy float [N, K] of a video
    with n frames, read without pickle; StoreArrayError for anything else (FileNotFoundError
    passes)."""
    what = Path(path).stem
    with open(path, "rb") as f:  # FileNotFoundError passes
        magic = f.read(6)
    if magic != b"\x93NUMPY":  # numpy would call it "pickled data" and suggest unpickling it
        raise StoreArrayError(f"{path}: not a .npy file (starts with {magic!r})")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # truncated, an object (pickled) array
        what_is = ("an object array (pickled Python objects, never loaded)" if "allow_pickle" in
                   str(e) else f"unreadable ({e})")
        raise StoreArrayError(f"{path}: {what_is}") from None
    kind, shape = {"index": ("i", (n + 1,)), "phase": ("i", (n,)),
                   "tools": ("f", (n, num_tools))}[what]
    if arr.dtype.kind != kind or arr.shape != shape:
        raise StoreArrayError(f"{path}: {arr.dtype} array of shape {arr.shape}, expected "
                              f"{'integers' if kind == 'i' else 'floats'} of shape {shape} "
                              f"({n} frames)")
    if what == "phase" and n and (arr.min() < -1 or arr.max() >= num_phases):
        raise StoreArrayError(f"{path}: phase ids {arr.min()}..{arr.max()} outside [-1, "
                              f"{num_phases})")
    if what == "index" and (arr[0] != 0 or (n and np.diff(arr).min() < 0)):
        raise StoreArrayError(f"{path}: byte offsets not increasing from 0")
    return arr


class PreparedDataset:
    def __init__(self, root, split: str = "all", subset: Optional[str] = None,
                 _manifest: Optional[dict] = None, _split: Optional[dict] = None, log=None):
        """log: called with each note about the store (missing videos and why, failed redos);
        default: `warnings.warn(note, DatasetWarning)`."""
        self.root = Path(root)
        if _manifest is None:
            path = self.root / MANIFEST
            if not path.is_file():
                raise SurgflowError(f"{path}: not found; {self.root} is not a prepared dataset "
                                    f"(run `surgflow prepare LAYOUT RAW_ROOT {self.root}` first)")
            try:
                _manifest = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise SurgflowError(f"{path}: unreadable ({e}); re-run surgflow prepare") from None
            if _manifest.get("storage") != STORAGE:
                raise SurgflowError(f"{path}: unsupported storage {_manifest.get('storage')!r} "
                                    f"(this surgflow reads {STORAGE!r}); re-prepare with this version")
        self.manifest = _manifest
        entries = _manifest.get("videos", {})
        available = sorted(v for v, e in entries.items() if e.get("status") == "done")
        self.missing: dict[str, str] = missing_videos(_manifest)
        self.split_name = str(split)
        holes: dict[str, str] = {}
        if _split is not None:
            self.splits = _split
        else:
            self.splits, holes = split_holes(split, available, self.missing)
        if subset is None:
            names = [v for k in SUBSETS for v in self.splits[k]]
        else:
            if subset not in SUBSETS:
                raise SurgflowError(f"unknown subset {subset!r}; use one of {', '.join(SUBSETS)}")
            names = self.splits[subset]
        self.subset_name = subset
        self.videos: list[str] = sorted(names)
        self.fps: float = float(_manifest["fps"])
        self.size: tuple[int, int] = (int(_manifest["size"][0]), int(_manifest["size"][1]))
        self.phase_names: list[str] = list(_manifest.get("phase_names", []))
        self.tool_names: list[str] = list(_manifest.get("tool_names", []))
        self._entries = entries
        self._cache: dict = {}
        self._lock = threading.Lock()
        # What a user must hear about this store (videos missing, redos that failed): once, when
        # it is opened from disk; subset() copies stay quiet.
        self.notes: list[str] = [] if _split is not None else self._notes(_manifest, holes)
        for note in self.notes:
            if log is not None:
                log(note)
            else:
                warnings.warn(note, DatasetWarning, stacklevel=2)

    def _notes(self, manifest: dict, where: dict[str, str]) -> list[str]:
        fix = (f"fix the source and re-run `surgflow prepare {manifest.get('layout', 'LAYOUT')} "
               f"{manifest.get('raw_root', 'RAW_ROOT')} {self.root}` (`--check` lists every problem)")
        notes = []
        if self.missing:
            lines = []
            for v, why in sorted(self.missing.items()):
                place = (f" (its place in the '{where[v]}' subset of split '{self.split_name}' "
                         f"stays empty: the other videos keep their subsets)" if v in where else "")
                lines.append(f"{v}{place}: {why}")
            notes.append(f"{len(self.missing)} video(s) of {self.root} are missing, not used: "
                         + "; ".join(lines) + f". To use them, {fix}")
        stale = {v: why for v, why in manifest.get("failed", {}).items() if v in self._entries
                 and self._entries[v].get("status") == "done"}
        for v, why in sorted(stale.items()):
            notes.append(f"{v}: its last redo failed ({why}); the store keeps its earlier prepared "
                         f"data (from the source as it was then). To update it, {fix}")
        return notes

    # ---------------------------------------------------------------------------------------
    def subset(self, name: str) -> "PreparedDataset":
        """The same dataset restricted to split subset `name` ("train", "val" or "test")."""
        return PreparedDataset(self.root, self.split_name, name, _manifest=self.manifest,
                               _split=self.splits)

    def __len__(self) -> int:
        return len(self.videos)

    def __repr__(self) -> str:
        return (f"PreparedDataset({str(self.root)!r}, split={self.split_name!r}, "
                f"subset={self.subset_name!r}, videos={len(self.videos)}, frames="
                f"{sum(self.num_frames(v) for v in self.videos)}, fps={self.fps:g}, size={self.size})")

    def _entry(self, video: str) -> dict:
        if video not in self._entries:
            raise SurgflowError(f"video {video!r} is not in {self.root / 'manifest.json'}; "
                                f"known: {', '.join(sorted(self._entries)[:10])}...")
        return self._entries[video]

    def num_frames(self, video: str) -> int:
        return int(self._entry(video)["frames"])

    def _get(self, video: str, what: str):
        key = (video, what)
        val = self._cache.get(key)
        if val is None:
            with self._lock:
                val = self._cache.get(key)
                if val is None:
                    folder = self.root / video
                    self._entry(video)
                    try:
                        if what == "frames":
                            size = (folder / "frames.bin").stat().st_size
                            # np.memmap of an empty file fails; an empty video has no frames
                            val = np.memmap(folder / "frames.bin", np.uint8, "r") if size else np.zeros(0, np.uint8)
                        elif what == "tools":
                            p = folder / "tools.npy"
                            val = self._load_npy(video, p) if p.exists() else False
                        else:
                            val = self._load_npy(video, folder / f"{what}.npy")
                    except FileNotFoundError as e:
                        raise SurgflowError(f"{e.filename}: missing; the prepared video {video} is "
                                            f"incomplete: re-run surgflow prepare") from None
                    self._cache[key] = val
        return val

    def _load_npy(self, video: str, path: Path) -> np.ndarray:
        try:
            return load_store_array(path, self.num_frames(video), len(self.phase_names),
                                    len(self.tool_names))
        except StoreArrayError as e:
            raise SurgflowError(
                f"{e}: the prepared data of {video} are damaged; find every damaged video with "
                f"`surgflow prepare LAYOUT RAW_ROOT {self.root} --check`, then run the same "
                f"command without --check to redo them") from None

    # ---------------------------------------------------------------------------------------
    def read_frames(self, video: str, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) of `video` -> uint8 [stop - start, H, W, 3] (RGB)."""
        n = self.num_frames(video)
        if not (0 <= start <= stop <= n):
            raise IndexError(f"{video}: frame range [{start}, {stop}) outside [0, {n})")
        index = self._get(video, "index")
        data = self._get(video, "frames")
        out = np.empty((stop - start, *self.size, 3), np.uint8)
        for j, i in enumerate(range(start, stop)):
            try:
                img = decode_jpeg(data[index[i]:index[i + 1]])
            except (OSError, ValueError, SyntaxError) as e:  # PIL: truncated / not a JPEG
                raise SurgflowError(
                    f"{self.root / video / 'frames.bin'}: frame {i} of video {video} cannot be "
                    f"decoded ({e}); the prepared data of {video} are corrupt. Find every damaged "
                    f"video with `surgflow prepare LAYOUT RAW_ROOT {self.root} --check`, then run "
                    f"the same command without --check to redo them") from None
            if img.shape[:2] != self.size:
                raise SurgflowError(f"{self.root / video}: frame {i} is {img.shape[:2]}, manifest "
                                    f"says {self.size}; re-run surgflow prepare")
            out[j] = img
        return out

    def phase(self, video: str) -> np.ndarray:
        """int64 [N] phase ids (-1 = no label)."""
        return self._get(video, "phase")

    def tools(self, video: str) -> Optional[np.ndarray]:
        """float32 [N, K] tool presence, or None when the dataset has no tool labels."""
        t = self._get(video, "tools")
        return None if t is False else t

    def anticipation(self, video: str, horizon: float,
                     instruments: Sequence[str] = tuple(ANTICIPATION_INSTRUMENTS)) -> np.ndarray:
        """float32 [N, I] minutes until each instrument's next use, in [0, horizon].

        A dataset without tool labels returns [N, 0] (phase-only datasets such as AutoLaparo).
        """
        tools = self.tools(video)
        if tools is None:
            return np.zeros((self.num_frames(video), 0), np.float32)
        unknown = [i for i in instruments if i not in self.tool_names]
        if unknown:
            raise SurgflowError(f"anticipation instrument(s) {', '.join(unknown)} are not tools of "
                                f"this dataset; known tools: {', '.join(self.tool_names)}")
        cols = [self.tool_names.index(i) for i in instruments]
        return anticipation_targets(tools[:, cols] > 0.5, self.fps, horizon)

    def phase_counts(self) -> np.ndarray:
        """int64 [num_phases] labelled frames per phase over this subset's videos."""
        counts = np.zeros(len(self.phase_names), np.int64)
        for v in self.videos:
            p = self.phase(v)
            p = p[p >= 0]
            counts += np.bincount(p, minlength=len(self.phase_names))[: len(self.phase_names)]
        return counts
