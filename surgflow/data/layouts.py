"""Raw dataset layouts, registered by name: each maps a raw root folder to a list of `RawVideo`.

Layouts only list files; labels are parsed lazily by `RawVideo.load()` so that one bad annotation
file fails its own video in `surgflow prepare`, not the whole run.

- `cholec80`: `videos/videoNN.mp4`, `phase_annotations/videoNN-phase.txt` (25-fps rows, frames
  0, 1, 2, ...), `tool_annotations/videoNN-tool.txt` (rows at frames 0, 25, 50, ...: 1 fps).
  Video names: the file stem (`video01`).
- `autolaparo`: `videos/XX.mp4`, `labels/label_XX.txt` with header `Frame\\tPhase`, one row per
  second, 1-based frame numbers 1, 2, 3, ... (row j is the second starting at (j - 1) s) and
  1-based phase ids 1..7 (names accepted). No tool labels. Video names: the file stem (`01`).
- `mstcn`: `videos/<name>.<ext>` (any container PyAV opens), `groundTruth/<name>.txt` (one label
  per decoded frame, at the video's own frame rate), `mapping.txt` (`id name`). `splits/*.bundle`
  are split files for `resolve_split`, not read here. No tool labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from surgflow.data import annotations as ann
from surgflow.io_utils import SurgflowError
from surgflow.labels import AUTOLAPARO_PHASES, CHOLEC80_FPS, CHOLEC80_PHASES, CHOLEC80_TOOLS
from surgflow.registry import LAYOUTS  # name -> function(raw_root: Path) -> list[RawVideo]

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")


@dataclass
class Labels:
    phase: np.ndarray  # int64 [R] phase ids at phase_fps (row r <-> time r / phase_fps)
    phase_fps: Optional[float]  # None: "same as the video's frame rate" (MS-TCN)
    tools: Optional[np.ndarray] = None  # float32 [Rt, K] at tools_fps, or None
    tools_fps: Optional[float] = None


@dataclass
class RawVideo:
    name: str
    video_path: Path
    phase_names: list[str]
    tool_names: list[str]
    sources: list[Path]  # every file this video's output depends on
    loader: Callable[[], Labels] = field(repr=False)
    _labels: Optional[Labels] = field(default=None, repr=False)

    def load(self) -> Labels:
        """Parse and validate the annotation files (raises SurgflowError naming the file)."""
        if self._labels is None:
            self._labels = self.loader()
        return self._labels


def _videos(root: Path, folder: str = "videos") -> dict[str, Path]:
    d = root / folder
    if not d.is_dir():
        raise SurgflowError(f"{d}: folder not found; the raw dataset root must contain {folder}/ "
                            f"(check RAW_ROOT and LAYOUT)")
    out = {}
    for p in sorted(d.iterdir()):
        if p.suffix.lower() in VIDEO_EXTS and not p.name.startswith("."):
            out[p.stem] = p
    return out


def _check_nonempty(root: Path, names, what: str) -> None:
    if not names:
        raise SurgflowError(f"{root}: no {what} found; check RAW_ROOT and LAYOUT")


@LAYOUTS.register("cholec80")
def cholec80(root) -> list[RawVideo]:
    root = Path(root)
    vids = _videos(root)
    # a video without its video file still appears (its failure is reported per video)
    for p in sorted((root / "phase_annotations").glob("*-phase.txt")):
        vids.setdefault(p.name[: -len("-phase.txt")], root / "videos" / (p.name[: -len("-phase.txt")] + ".mp4"))
    _check_nonempty(root, vids, "videos in videos/ or phase_annotations/")
    out = []
    for name, vpath in vids.items():
        ppath = root / "phase_annotations" / f"{name}-phase.txt"
        tpath = root / "tool_annotations" / f"{name}-tool.txt"
        has_tools = (root / "tool_annotations").is_dir()

        def load(ppath=ppath, tpath=tpath, has_tools=has_tools) -> Labels:
            frames, phase = ann.parse_phase_file(ppath, CHOLEC80_PHASES)
            ann.rows_from_frames(ppath, frames, step=1)
            tools = None
            if has_tools:
                tframes, tools = ann.parse_tool_file(tpath, CHOLEC80_TOOLS)
                ann.rows_from_frames(tpath, tframes, step=int(CHOLEC80_FPS))
            return Labels(phase, CHOLEC80_FPS, tools, 1.0 if tools is not None else None)

        srcs = [vpath, ppath] + ([tpath] if has_tools else [])
        out.append(RawVideo(name, vpath, list(CHOLEC80_PHASES), list(CHOLEC80_TOOLS) if has_tools else [],
                            srcs, load))
    return out


@LAYOUTS.register("autolaparo")
def autolaparo(root) -> list[RawVideo]:
    root = Path(root)
    vids = _videos(root)
    for p in sorted((root / "labels").glob("label_*.txt")):
        vids.setdefault(p.stem[len("label_"):], root / "videos" / (p.stem[len("label_"):] + ".mp4"))
    _check_nonempty(root, vids, "videos in videos/ or labels/")
    out = []
    for name, vpath in vids.items():
        lpath = root / "labels" / f"label_{name}.txt"

        def load(lpath=lpath) -> Labels:
            frames, phase = ann.parse_phase_file(lpath, AUTOLAPARO_PHASES, one_based=True)
            ann.rows_from_frames(lpath, frames, step=1, first=1)
            return Labels(phase, 1.0)

        out.append(RawVideo(name, vpath, list(AUTOLAPARO_PHASES), [], [vpath, lpath], load))
    return out


@LAYOUTS.register("mstcn")
def mstcn(root) -> list[RawVideo]:
    root = Path(root)
    mapping = root / "mapping.txt"
    names = ann.parse_mapping(mapping)
    vids = _videos(root)
    for p in sorted((root / "groundTruth").glob("*.txt")):
        vids.setdefault(p.stem, root / "videos" / f"{p.stem}.mp4")
    _check_nonempty(root, vids, "videos in videos/ or groundTruth/")
    out = []
    for name, vpath in vids.items():
        gpath = root / "groundTruth" / f"{name}.txt"

        def load(gpath=gpath) -> Labels:
            return Labels(ann.parse_mstcn_ground_truth(gpath, names), None)

        out.append(RawVideo(name, vpath, list(names), [], [vpath, gpath, mapping], load))
    return out


def get_layout(name: str) -> Callable[[Path], list[RawVideo]]:
    return LAYOUTS.get(name)
