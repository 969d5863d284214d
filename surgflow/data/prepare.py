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
from surgflow.data.layouts import get_layout
from surgflow.data.sources import source_changes, source_info
from surgflow.data.store import StoreArrayError, load_store_array
from surgflow.data.store_format import (FORMAT_VERSION, JPEG_QUALITY, MANIFEST, STORAGE,
                                        encode_jpeg, video_checksum)
from surgflow.data.video import CORRUPT_FIX, rotation_note, sample_frames, vfr_note
from surgflow.io_utils import SurgflowError, atomic_write_json, progress
from surgflow.outputs import FolderLock, check_writable_dir, disk_full_error, is_disk_full
from surgflow.parallel import run_in_processes


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
        old = out / f".tmp-old-{raw.name}-{os.getpid()}"
        if final.exists():  # the earlier data go only now that the redo succeeded
            os.rename(final, old)
        os.rename(tmp, final)  # the folder appears complete or not at all
        return entry
    finally:
        for p in (tmp, out / f".tmp-old-{raw.name}-{os.getpid()}"):
            if p.exists():
                shutil.rmtree(p, ignore_errors=True)


def _worker(job) -> tuple[str, Optional[dict], Optional[str]]:
    layout, raw_root, name, out, fps, size, max_mismatch, show = job

    try:
        raw = next(v for v in get_layout(layout)(raw_root) if v.name == name)
        return name, prepare_video(raw, Path(out), fps, size, max_mismatch, show_progress=show), None
    except SurgflowError as e:
        return name, None, str(e)
    except MemoryError:
        raise
    except OSError as e:
        if is_disk_full(e):  # not this video's fault: stop the run, record no failure
            raise _disk_full(e, Path(out)) from None
        return name, None, f"{type(e).__name__}: {e}"
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


SOURCE_CHANGED = "raw source changed: "


def _stale_reasons(out: Path, name: str, entry: Optional[dict], raw,
                   full_hash: bool = False) -> list[str]:
    """Why `name` must be (re)prepared; [] = complete and up to date. Stored data that do not
    match their checksum come first (nothing to keep), then changed sources."""
    if not entry:
        return ["not prepared yet"]
    folder = out / name
    if entry.get("status") != "done" or not (folder / "index.npy").is_file():
        return ["interrupted (incomplete folder)"]
    if video_checksum(folder) != entry.get("checksum"):
        return ["stored data do not match their checksum (corrupt or modified)"]
    reasons = source_changes(entry.get("source", {}), raw, full_hash=full_hash)
    if reasons:
        return [f"{SOURCE_CHANGED}{r}" for r in reasons]
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
            workers: int = 1, max_mismatch: int = 5, videos: Optional[list[str]] = None,
            full_hash: bool = False) -> PrepareResult:
    """Prepare every video of a raw dataset (see module docstring). Never raises for one bad
    video: failures are collected in the result (and in the manifest's `failed`); the caller
    decides the exit status. A full disk stops it (SurgflowError naming the folder and the free
    space; finished videos are kept). full_hash: decide whether a raw video changed by its
    whole-file sha256 (slow on large files) instead of size, mtime and first/last MiB."""
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
        try:
            return _prepare_locked(layout, raw_root, out, raws, fps, size, workers, max_mismatch,
                                   full_hash)
        except OSError as e:
            if not is_disk_full(e):
                raise
            _remove_temporary(out)
            raise _disk_full(e, out) from None
        except SurgflowError:  # e.g. a worker's disk-full: its half-written folder goes too
            _remove_temporary(out)
            raise


def _remove_temporary(out: Path) -> None:
    """Temporary folders of stopped workers (we hold the lock: no other prepare writes here)."""
    for p in out.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def _disk_full(e: OSError, out: Path) -> SurgflowError:
    """train's disk-full message, for prepare: the folder, the free space, how to resume."""
    manifest = load_manifest(out) or {}
    n = len(manifest.get("videos", {}))
    return disk_full_error(e, out, f"the {n} video(s) finished before are kept ({out / MANIFEST}); "
                                   f"free space or choose another OUT, then re-run the same "
                                   f"command to resume")


def _prepare_locked(layout, raw_root: Path, out: Path, raws, fps, size, workers,
                    max_mismatch, full_hash: bool = False) -> PrepareResult:
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
    _remove_temporary(out)  # of an interrupted run

    todo, skipped, redone = [], [], {}
    for raw in raws:
        entry = manifest["videos"].get(raw.name)
        reasons = _stale_reasons(out, raw.name, entry, raw, full_hash)
        if not reasons:
            skipped.append(raw.name)
            manifest["failed"].pop(raw.name, None)  # e.g. a failed redo, its source restored since
            continue
        todo.append(raw.name)
        if entry:
            redone[raw.name] = "; ".join(reasons)
        if not (entry and reasons[0].startswith(SOURCE_CHANGED)):
            # partial or corrupt: nothing worth keeping
            manifest["videos"].pop(raw.name, None)
            if (out / raw.name).exists():
                shutil.rmtree(out / raw.name)
        # else: intact data of the earlier source; they (and their entry) stay until the redo
        # succeeds, so a redo that fails (a corrupt new source) loses nothing
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


def _check_video(out: Path, name: str, entry: dict, manifest: dict) -> list[str]:
    folder = out / name
    if entry.get("status") != "done":
        return [f"{name}: status {entry.get('status')!r}, not done; re-run prepare to redo it"]
    if not folder.is_dir():
        return [f"{name}: folder {folder} missing; re-run prepare to redo it"]
    problems, arrays = [], {}
    n = int(entry.get("frames", -1))
    tool_names = manifest.get("tool_names") or []
    for what in ("index", "phase") + (("tools",) if tool_names else ()):
        try:
            arrays[what] = load_store_array(folder / f"{what}.npy", n,
                                            len(manifest.get("phase_names", [])), len(tool_names))
        except FileNotFoundError:
            problems.append(f"{name}: {what}.npy missing; re-run prepare to redo it")
        except StoreArrayError as e:  # garbage, an object array, wrong length or dtype
            problems.append(f"{name}: {e}; re-run prepare to redo it")
    index = arrays.get("index")
    size = (folder / "frames.bin").stat().st_size if (folder / "frames.bin").exists() else -1
    if index is not None and size != int(index[-1]):
        problems.append(f"{name}: frames.bin has {size} bytes, index expects {int(index[-1])}; "
                        f"re-run prepare to redo it")
    if video_checksum(folder) != entry.get("checksum"):
        problems.append(f"{name}: checksum mismatch (stored data changed or corrupt); re-run "
                        f"prepare to redo it")
    return problems


def check(out, layout: Optional[str] = None, raw_root=None, full_hash: bool = False) -> list[str]:
    """Verify a prepared dataset; returns a list of problems (empty = OK). Any video that is not
    complete is a problem (failed, interrupted, corrupt), and so is an empty dataset. Given
    `layout` and `raw_root`, raw videos not prepared and raw sources changed since are too;
    full_hash: each raw video's whole-file sha256 against the one recorded at prepare time."""
    out = Path(out)
    manifest = load_manifest(out)
    if manifest is None:
        return [f"{out / MANIFEST}: missing; run `surgflow prepare` first"]
    videos = manifest.get("videos", {})
    problems = []
    for name, err in sorted(manifest.get("failed", {}).items()):
        kept = " (its earlier prepared data are kept)" if name in videos else ""
        problems.append(f"{name}: failed to prepare{kept}: {err}")
    for name, entry in progress(videos.items(), desc="check", unit="video"):
        problems += _check_video(out, name, entry, manifest)
    if not videos:
        problems.append(f"{out}: no prepared video; run `surgflow prepare LAYOUT RAW_ROOT {out}`")
    if raw_root is not None:
        raws = {r.name: r for r in get_layout(layout or manifest.get("layout", ""))(Path(raw_root))}
        for name, raw in sorted(raws.items()):
            if name not in videos:
                if name not in manifest.get("failed", {}):
                    problems.append(f"{name}: in {raw_root} but not prepared; re-run prepare")
                continue
            for r in source_changes(videos[name].get("source", {}), raw, full_hash=full_hash):
                problems.append(f"{name}: raw source changed since prepare ({r}); re-run prepare "
                                f"to redo it")
        for name in sorted(set(videos) - set(raws)):
            problems.append(f"{name}: prepared but no longer in {raw_root}")
    for p in out.glob(".tmp-*"):
        problems.append(f"{p}: leftover temporary folder of an interrupted run (removed by "
                        f"the next prepare)")
    return problems


def format_failures(failed: dict[str, str], manifest: Optional[dict] = None) -> str:
    """One line per failed video; given the manifest, says where earlier data were kept."""
    kept = (manifest or {}).get("videos", {})
    return "\n".join(f"  {name}: {msg}" + (" (the earlier prepared data of this video are kept "
                                          "until a redo succeeds)" if name in kept else "")
                     for name, msg in sorted(failed.items()))


def print_summary(res: PrepareResult, out: Path, file=None) -> None:
    file = file if file is not None else sys.stdout  # at call time (redirected, captured)
    n_frames = sum(e["frames"] for e in res.manifest["videos"].values())
    print(f"prepared {len(res.done)} video(s), skipped {len(res.skipped)} already complete, "
          f"failed {len(res.failed)}; {len(res.manifest['videos'])} video(s), {n_frames} frames "
          f"in {out}", file=file)
    for name, why in sorted(res.redone.items()):
        if name not in res.failed:
            print(f"  {name}: prepared again: {why}", file=file)
        elif name in res.manifest["videos"]:
            print(f"  {name}: redo FAILED (see below), earlier prepared data kept; redone because "
                  f"{why}", file=file)
        else:
            print(f"  {name}: redo FAILED (see below); redone because {why}", file=file)
