"""`surgflow prepare`: decode every raw video once into a prepared frame store with aligned labels.

Per video: decode sequentially (surgflow/data/video.py, shared with online predict), keep the
frame closest in time to each target time i / fps, resize it, JPEG-encode it into one packed file
(surgflow/data/store_format.py), align the labels (surgflow/data/alignment.py), and write
everything into a temporary folder that is renamed into place when complete. The manifest is
rewritten atomically after each finished video, so an interrupted run never leaves a video that
looks finished. A re-run skips a video only when its stored data match the manifest's checksum
AND its raw sources are unchanged (content hashes, surgflow/data/sources.py); otherwise it redoes
the video and says why. One prepare at a time per OUT (a lock; see surgflow/outputs.py).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from surgflow.data.alignment import align_labels
from surgflow.data.sources import source_changes, source_info
from surgflow.data.store_format import (FORMAT_VERSION, JPEG_QUALITY, MANIFEST, STORAGE,
                                        encode_jpeg, video_checksum)
from surgflow.data.video import CORRUPT_FIX, rotation_note, sample_frames, vfr_note
from surgflow.io_utils import SurgflowError, atomic_write_json, progress
from surgflow.outputs import FolderLock, check_writable_dir


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # inside the temporary folder; fsync before the folder rename
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def prepare_video(raw, out: Path, fps: float, size: tuple[int, int], max_mismatch: int,
                  quality: int = JPEG_QUALITY, show_progress: bool = False) -> dict:
    """Prepare one RawVideo into out/<name>/ (via a temporary folder); returns its manifest entry."""
    labels = raw.load()  # annotation errors first: no decoding for a video that cannot be used
    source = source_info(raw)  # before decoding: a file changed meanwhile is redone next time
    tmp = out / f".tmp-{raw.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        stats: dict = {}
        offsets = [0]
        bar = progress(desc=f"  {raw.name}", unit="frame", leave=False,
                       disable=not show_progress or os.environ.get("SURGFLOW_NO_PROGRESS") == "1")
        with open(tmp / "frames.bin", "wb") as fbin, bar:
            for _, img in sample_frames(raw.video_path, fps, size, stats):
                data = encode_jpeg(img, quality)
                fbin.write(data)
                offsets.append(offsets[-1] + len(data))
                bar.update(1)
            n_out = len(offsets) - 1
            if stats["decoded_frames"] == 0:
                raise SurgflowError(f"{raw.video_path}: no frame could be decoded; {CORRUPT_FIX}")
            phase_file = str(raw.sources[1]) if len(raw.sources) > 1 else ""
            tool_file = str(raw.sources[2]) if len(raw.sources) > 2 else ""
            vfr = vfr_note(raw.video_path, stats, fps)
            try:
                n, phase, tools, alignment, R, Rt = align_labels(
                    raw.name, n_out, stats["decoded_frames"], stats["video_fps"], fps, labels,
                    max_mismatch, phase_file, tool_file, why=vfr)
            except SurgflowError as e:
                declared, decoded = stats["declared_frames"], stats["decoded_frames"]
                if declared > decoded + max_mismatch:
                    raise SurgflowError(
                        f"{e}. Note: {raw.video_path} declares {declared} frames but only {decoded} "
                        f"could be decoded, so the video is probably truncated: {CORRUPT_FIX}") from None
                raise
            fbin.truncate(offsets[n])  # drop unlabelled trailing frames
            fbin.flush()
            os.fsync(fbin.fileno())
        _save_npy(tmp / "index.npy", np.asarray(offsets[:n + 1], np.int64))
        _save_npy(tmp / "phase.npy", phase)
        if tools is not None:
            _save_npy(tmp / "tools.npy", tools)
        notes = [x for x in (rotation_note(stats["rotation"]), vfr) if x]
        entry = {
            "status": "done",
            "frames": int(n),
            "decoded_frames": int(stats["decoded_frames"]),
            "label_rows": int(R),
            "tool_rows": int(Rt),
            "alignment": alignment,
            "fps": float(fps),
            "size": [int(size[0]), int(size[1])],
            "video_fps": stats["video_fps"],
            "rotation": int(stats["rotation"]),
            "vfr": bool(stats["vfr"]),
            "notes": notes,
            "checksum": video_checksum(tmp),
            "source": source,
        }
        (tmp / "meta.json").write_text(json.dumps(entry, indent=2) + "\n")
        final = out / raw.name
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)  # the folder appears complete or not at all
        return entry
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _worker(job) -> tuple[str, Optional[dict], Optional[str]]:
    layout, raw_root, name, out, fps, size, max_mismatch, show = job
    from surgflow.data.layouts import get_layout

    try:
        raw = next(v for v in get_layout(layout)(raw_root) if v.name == name)
        return name, prepare_video(raw, Path(out), fps, size, max_mismatch, show_progress=show), None
    except SurgflowError as e:
        return name, None, str(e)
    except MemoryError:
        raise
    except Exception as e:  # unexpected: still report it per video, with the type for debugging
        return name, None, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
@dataclass
class PrepareResult:
    done: list[str]  # prepared in this run
    skipped: list[str]  # already complete
    failed: dict[str, str]  # name -> message
    manifest: dict
    redone: dict[str, str] = field(default_factory=dict)  # name -> why it was prepared again


def _stale_reasons(out: Path, name: str, entry: Optional[dict], raw) -> list[str]:
    """Why `name` must be (re)prepared; [] = complete and up to date."""
    if not entry:
        return ["not prepared yet"]
    folder = out / name
    if entry.get("status") != "done" or not (folder / "index.npy").is_file():
        return ["interrupted (incomplete folder)"]
    reasons = source_changes(entry.get("source", {}), raw)
    if reasons:
        return [f"raw source changed: {r}" for r in reasons]
    if video_checksum(folder) != entry.get("checksum"):
        return ["stored data do not match their checksum (corrupt or modified)"]
    return []


def load_manifest(out: Path) -> Optional[dict]:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SurgflowError(f"{path}: unreadable manifest ({e}); delete it and re-run prepare") from None


def prepare(layout: str, raw_root, out, fps: float = 1.0, size: tuple[int, int] = (216, 384),
            workers: int = 1, max_mismatch: int = 5, videos: Optional[list[str]] = None) -> PrepareResult:
    """Prepare every video of a raw dataset (see module docstring). Never raises for one bad
    video: failures are collected in the result (and in the manifest's `failed`); the caller
    decides the exit status."""
    from surgflow.data.layouts import get_layout

    raw_root, out = Path(raw_root), Path(out)
    if fps <= 0:
        raise SurgflowError(f"--fps must be > 0, got {fps}")
    if not raw_root.is_dir():
        raise SurgflowError(f"raw dataset folder not found: {raw_root}; check RAW_ROOT")
    raws = get_layout(layout)(raw_root)
    if videos is not None:
        raws = [r for r in raws if r.name in set(videos)]
    check_writable_dir(out, "output folder")
    with FolderLock(out, "surgflow prepare", log=lambda m: print(m, file=sys.stderr)):
        return _prepare_locked(layout, raw_root, out, raws, fps, size, workers, max_mismatch)


def _prepare_locked(layout, raw_root: Path, out: Path, raws, fps, size, workers,
                    max_mismatch) -> PrepareResult:
    header = {
        "format_version": FORMAT_VERSION, "layout": layout, "fps": float(fps),
        "size": [int(size[0]), int(size[1])], "storage": STORAGE,
        "phase_names": raws[0].phase_names if raws else [],
        "tool_names": raws[0].tool_names if raws else [],
    }
    manifest = load_manifest(out)
    if manifest is None:
        manifest = dict(header, raw_root=str(raw_root.resolve()), videos={}, failed={})
    else:
        for k, v in header.items():
            if manifest.get(k) != v:
                raise SurgflowError(
                    f"{out / MANIFEST}: this folder was prepared with {k}={manifest.get(k)!r}, "
                    f"now {k}={v!r}; use another OUT folder or delete {out}")
        manifest.setdefault("failed", {})
    # temporary folders of an interrupted run (we hold the lock: no other prepare is writing)
    for p in out.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)

    todo, skipped, redone = [], [], {}
    for raw in raws:
        entry = manifest["videos"].get(raw.name)
        reasons = _stale_reasons(out, raw.name, entry, raw)
        if not reasons:
            skipped.append(raw.name)
            continue
        todo.append(raw.name)
        if entry:
            redone[raw.name] = "; ".join(reasons)
        manifest["videos"].pop(raw.name, None)
        if (out / raw.name).exists():
            shutil.rmtree(out / raw.name)  # partial or stale: redo it
    atomic_write_json(out / MANIFEST, manifest)

    show = workers <= 1  # a per-video frame bar only when videos are done one at a time
    jobs = [(layout, str(raw_root), name, str(out), float(fps), tuple(size), int(max_mismatch), show)
            for name in todo]
    done, failed = [], {}
    bar = progress(total=len(jobs), desc="prepare", unit="video")

    def finish(name, entry, err):
        if err is None:
            manifest["videos"][name] = entry
            manifest["videos"] = dict(sorted(manifest["videos"].items()))
            manifest["failed"].pop(name, None)
            done.append(name)
        else:
            failed[name] = err
            manifest["failed"][name] = err
        atomic_write_json(out / MANIFEST, manifest)
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                finish(*_worker(job))
        else:
            from surgflow.parallel import run_in_processes

            for res in run_in_processes(_worker, [(j,) for j in jobs], workers, start_method="fork"):
                finish(*res)
    finally:
        bar.close()
    return PrepareResult(done, skipped, failed, manifest, redone)


def prepare_dataset(layout: str, raw_root, out, fps: float = 1.0,
                    size: tuple[int, int] = (216, 384), workers: int = 1,
                    max_mismatch: int = 5) -> PrepareResult:
    """`prepare` for callers that need every video (demo, experiments): raises SurgflowError
    listing each failed video with its message."""
    res = prepare(layout, raw_root, out, fps=fps, size=tuple(size), workers=workers,
                  max_mismatch=max_mismatch)
    if res.failed:
        raise SurgflowError(f"{len(res.failed)} video(s) could not be prepared into {out}:\n"
                            f"{format_failures(res.failed)}")
    return res


def _check_video(out: Path, name: str, entry: dict, tool_names) -> list[str]:
    folder = out / name
    if entry.get("status") != "done":
        return [f"{name}: status {entry.get('status')!r}, not done; re-run prepare to redo it"]
    if not folder.is_dir():
        return [f"{name}: folder {folder} missing; re-run prepare to redo it"]
    try:
        index = np.load(folder / "index.npy")
        phase = np.load(folder / "phase.npy")
    except (OSError, ValueError) as e:
        return [f"{name}: cannot read index/labels ({e}); re-run prepare to redo it"]
    problems = []
    n = entry.get("frames")
    if len(index) != n + 1 or len(phase) != n:
        problems.append(f"{name}: manifest says {n} frames, index has {len(index) - 1}, phase "
                        f"labels {len(phase)}; re-run prepare to redo it")
    size = (folder / "frames.bin").stat().st_size if (folder / "frames.bin").exists() else -1
    if size != int(index[-1]):
        problems.append(f"{name}: frames.bin has {size} bytes, index expects {int(index[-1])}; "
                        f"re-run prepare to redo it")
    if tool_names:
        if not (folder / "tools.npy").exists() or len(np.load(folder / "tools.npy")) != n:
            problems.append(f"{name}: tools.npy missing or of wrong length; re-run prepare")
    if video_checksum(folder) != entry.get("checksum"):
        problems.append(f"{name}: checksum mismatch (stored data changed or corrupt); re-run "
                        f"prepare to redo it")
    return problems


def check(out, layout: Optional[str] = None, raw_root=None) -> list[str]:
    """Verify a prepared dataset; returns a list of problems (empty = OK). Any video that is not
    complete is a problem (failed, interrupted, corrupt), and so is an empty dataset. Given
    `layout` and `raw_root`, raw videos not prepared and raw sources changed since are too."""
    out = Path(out)
    manifest = load_manifest(out)
    if manifest is None:
        return [f"{out / MANIFEST}: missing; run `surgflow prepare` first"]
    videos = manifest.get("videos", {})
    problems = []
    for name, err in sorted(manifest.get("failed", {}).items()):
        problems.append(f"{name}: failed to prepare: {err}")
    for name, entry in progress(videos.items(), desc="check", unit="video"):
        problems += _check_video(out, name, entry, manifest.get("tool_names"))
    if not videos:
        problems.append(f"{out}: no prepared video; run `surgflow prepare LAYOUT RAW_ROOT {out}`")
    if raw_root is not None:
        from surgflow.data.layouts import get_layout

        raws = {r.name: r for r in get_layout(layout or manifest.get("layout", ""))(Path(raw_root))}
        for name, raw in sorted(raws.items()):
            if name not in videos:
                if name not in manifest.get("failed", {}):
                    problems.append(f"{name}: in {raw_root} but not prepared; re-run prepare")
                continue
            for r in source_changes(videos[name].get("source", {}), raw):
                problems.append(f"{name}: raw source changed since prepare ({r}); re-run prepare "
                                f"to redo it")
        for name in sorted(set(videos) - set(raws)):
            problems.append(f"{name}: prepared but no longer in {raw_root}")
    for p in out.glob(".tmp-*"):
        problems.append(f"{p}: leftover temporary folder of an interrupted run (removed by "
                        f"the next prepare)")
    return problems


def format_failures(failed: dict[str, str]) -> str:
    return "\n".join(f"  {name}: {msg}" for name, msg in sorted(failed.items()))


def print_summary(res: PrepareResult, out: Path, file=sys.stdout) -> None:
    n_frames = sum(e["frames"] for e in res.manifest["videos"].values())
    print(f"prepared {len(res.done)} video(s), skipped {len(res.skipped)} already complete, "
          f"failed {len(res.failed)}; {len(res.manifest['videos'])} video(s), {n_frames} frames "
          f"in {out}", file=file)
    for name, why in sorted(res.redone.items()):
        print(f"  {name}: prepared again: {why}", file=file)
