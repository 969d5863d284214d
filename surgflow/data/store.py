"""Open a prepared dataset (output of `surgflow prepare`) by split and read frame ranges + labels.

    ds = PreparedDataset(root, split="auto", subset="train")
    frames = ds.read_frames("video01", 0, 64)      # uint8 [64, H, W, 3] RGB
    ds.phase("video01"), ds.tools("video01"), ds.anticipation("video01", 3.0, instruments)

Frames are stored as packed JPEGs (one file per video + byte offsets), memory-mapped and decoded on
demand, so any range is one contiguous read; reads are thread-safe.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from surgflow.data.splits import SUBSETS, resolve_split
from surgflow.data.store_format import MANIFEST, STORAGE, decode_jpeg
from surgflow.data.targets import anticipation_targets
from surgflow.io_utils import SurgflowError
from surgflow.labels import ANTICIPATION_INSTRUMENTS


class PreparedDataset:
    def __init__(self, root, split: str = "all", subset: Optional[str] = None,
                 _manifest: Optional[dict] = None, _split: Optional[dict] = None):
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
        self.split_name = str(split)
        self.splits = _split if _split is not None else resolve_split(split, available)
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
                            val = np.load(p) if p.exists() else False
                        else:
                            val = np.load(folder / f"{what}.npy")
                    except FileNotFoundError as e:
                        raise SurgflowError(f"{e.filename}: missing; the prepared video {video} is "
                                            f"incomplete: re-run surgflow prepare") from None
                    self._cache[key] = val
        return val

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
