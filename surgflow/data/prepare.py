"""`surgflow prepare`: decode every raw video once into a prepared frame store with aligned labels.

Per video: decode sequentially with PyAV, keep the frame closest in time to each target time
i / fps (exact rational timestamps), resize it (swscale), JPEG-encode it into one packed file, align
the labels (row whose time is closest to i / fps: Cholec80 1-fps frame i <-> phase row 25 i), and
write everything into a temporary folder that is renamed into place when complete. The manifest is
rewritten atomically after each finished video, so an interrupted run never leaves a video that
looks finished; a re-run skips videos whose folder and checksum match the manifest.

Per-video folder (storage "jpeg_packed", chosen by benchmarks/bench_prepare.py):
    frames.bin   concatenated JPEG images (RGB, quality 90)
    index.npy    int64 [N + 1] byte offsets of the images in frames.bin
    phase.npy    int64 [N] phase ids (-1 = no label)
    tools.npy    float32 [N, K] tool presence (only when the layout has tool labels)
    meta.json    copy of the manifest entry (informative)
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from surgflow.io_utils import SurgflowError, atomic_write_json, atomic_write_text, progress

FORMAT_VERSION = 1
STORAGE = "jpeg_packed"
JPEG_QUALITY = 90
DATA_FILES = ("frames.bin", "index.npy", "phase.npy", "tools.npy")
CORRUPT_FIX = ("the file is corrupt, truncated or not a video: re-download or re-encode it "
               "(e.g. `ffmpeg -i in.mp4 -c:v libx264 out.mp4`), or remove it from the raw folder")


def parse_size(text: str) -> tuple[int, int]:
    """'384x216' (W x H, like the paper) -> (H, W)."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise SurgflowError(f"--size {text!r}: expected WIDTHxHEIGHT such as 384x216") from None
    if w < 8 or h < 8 or w % 2 or h % 2:
        raise SurgflowError(f"--size {text!r}: width and height must be even and >= 8")
    return h, w


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------
def open_video(path: Path):
    """Open a video with PyAV; SurgflowError naming the file and the fix if it cannot be read."""
    import av

    path = Path(path)
    if not path.is_file():
        raise SurgflowError(f"video file not found: {path}; add it or remove its annotation files")
    try:
        container = av.open(str(path))
    except Exception as e:  # av.error.* (InvalidDataError, ...)
        raise SurgflowError(f"{path}: cannot open video ({e}); {CORRUPT_FIX}") from None
    if not container.streams.video:
        container.close()
        raise SurgflowError(f"{path}: no video stream; {CORRUPT_FIX}")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threads: decoding stays sequential and in order
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        container.close()
        raise SurgflowError(f"{path}: unknown frame rate; re-encode it with a constant frame rate")
    return container, stream, Fraction(rate)


def sample_by_timestamp(frames: Iterable, time_base, rate: Fraction,
                        fps: float) -> Iterator[tuple[int, Any]]:
    """Yield (target index i, decoded frame) for target times i / fps from frames decoded in order.

    Target i takes the decoded frame whose timestamp (relative to the first frame) is closest to
    i / fps (the earlier one on a tie); a frame may serve several targets when fps exceeds the
    video's rate. Shared by `prepare` and online `predict`, so both sample the same frames.
    """
    step = Fraction(fps).limit_denominator(1000)
    rate = Fraction(rate)
    tb = Fraction(time_base) if time_base is not None else None
    # Exact integer form of "i / step < t + 1 / (2 rate)" (emit every target before the midpoint
    # to the next frame), with t = (pts - pts0) * tb or k / rate: Fractions per frame cost more
    # than the resize of the frames kept.
    p, q, r, s = step.numerator, step.denominator, rate.numerator, rate.denominator
    a, b = (tb.numerator, tb.denominator) if tb is not None else (0, 1)
    lhs_unit = 2 * q * b * r  # target i -> 2 i q b r
    half = s * p * b
    i, pts0 = 0, None
    for k, frame in enumerate(frames):
        if frame.pts is not None and tb is not None:
            pts0 = frame.pts if pts0 is None else pts0
            rhs = 2 * (frame.pts - pts0) * a * p * r + half
        else:
            rhs = 2 * k * s * p * b + half  # t = k / rate = k s / r
        while i * lhs_unit < rhs:
            yield i, frame
            i += 1


def frame_to_rgb(frame, size: Optional[tuple[int, int]] = None, reformatter=None) -> np.ndarray:
    """A decoded av.VideoFrame -> uint8 RGB [H, W, 3], resized by swscale when `size` (H, W) is
    given: the one resize of the store, shared by online prediction. Pass one
    `av.video.reformatter.VideoReformatter` per video: reusing its swscale context is 3x faster
    than a new one per frame, with identical pixels. (Not a module-wide cache: a context alive
    when prepare forks its workers hangs them.)"""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    if reformatter is None:
        from av.video.reformatter import VideoReformatter

        reformatter = VideoReformatter()
    h, w = int(size[0]), int(size[1])
    return reformatter.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()


def _decode_checked(container, stream, path: Path, stats: dict) -> Iterator[Any]:
    """Decode in order, counting frames; a decode error names the file and how far it got."""
    frames = container.decode(stream)
    stats["decoded_frames"] = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except Exception as e:
            raise SurgflowError(f"{path}: decoding failed after {stats['decoded_frames']} frames ({e}); "
                                f"{CORRUPT_FIX}") from None
        stats["decoded_frames"] += 1
        yield frame


def sample_frames(path: Path, fps: float, size: Optional[tuple[int, int]] = None,
                  stats: Optional[dict] = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode `path` once and yield (i, rgb uint8 [H, W, 3]) for target times i / fps
    (the rule of `sample_by_timestamp`). `stats` receives decoded_frames, video_fps and
    declared_frames."""
    container, stream, rate = open_video(path)
    stats = stats if stats is not None else {}
    stats.update(video_fps=float(rate), declared_frames=int(stream.frames or 0))
    try:
        decoded = _decode_checked(container, stream, path, stats)
        from av.video.reformatter import VideoReformatter

        reformatter = VideoReformatter()
        for i, frame in sample_by_timestamp(decoded, stream.time_base, rate, fps):
            yield i, frame_to_rgb(frame, size, reformatter)
    finally:
        container.close()


# --------------------------------------------------------------------------------------------
# label alignment
# --------------------------------------------------------------------------------------------
def _rows_for(n: int, fps: float, label_fps: float) -> np.ndarray:
    """Row index closest in time to each output frame i (time i / fps) at `label_fps`."""
    t = np.arange(n, dtype=np.float64) / fps
    return np.floor(t * label_fps + 0.5 + 1e-9).astype(np.int64)


def align_labels(name: str, n_out: int, decoded: int, video_fps: float, fps: float, labels,
                 max_mismatch: int, phase_file: str, tool_file: str = ""):
    """Return (n_frames, phase [n], tools [n, K] or None, alignment text, label_rows, tool_rows).

    Counts are compared in rows of each file: expected rows = ceil(decoded * label_fps / video_fps).
    The tolerance is `max_mismatch` source frames converted to rows (at least one 1-fps tool row
    when max_mismatch > 0). Within it: trailing output frames without a phase row are dropped
    (truncate to the shorter), a missing final tool row is padded by repeating the last row,
    extra rows are ignored. Beyond it: SurgflowError naming the video, both counts and the flag.
    """
    notes = []
    phase_fps = labels.phase_fps or video_fps
    R = len(labels.phase)
    exp = math.ceil(decoded * phase_fps / video_fps - 1e-9)
    tol = math.ceil(max_mismatch * phase_fps / video_fps - 1e-9)
    if abs(R - exp) > tol:
        raise SurgflowError(
            f"video {name}: decoded {decoded} frames at {video_fps:g} fps, so {exp} phase rows at "
            f"{phase_fps:g} fps are expected, but {phase_file} has {R} rows (difference "
            f"{abs(R - exp)} > tolerance {tol} rows = --max-mismatch {max_mismatch} source frames); "
            f"check that the annotation belongs to this video, or raise --max-mismatch")
    rows = _rows_for(n_out, fps, phase_fps)
    n = int(np.searchsorted(rows, R))  # rows is non-decreasing: keep frames with a phase row
    if R == exp:
        notes.append(f"phase: {R} rows = {decoded} decoded frames at {phase_fps:g} fps")
    elif R < exp:
        notes.append(f"phase: {exp - R} row(s) fewer than decoded frames (within tolerance {tol}): "
                     f"truncated to the labelled part, dropped {n_out - n} output frame(s)")
    else:
        notes.append(f"phase: {R - exp} extra row(s) beyond the decoded frames (within tolerance "
                     f"{tol}): ignored")
    phase = labels.phase[rows[:n]].astype(np.int64)

    tools, Rt = None, 0
    if labels.tools is not None:
        Rt = len(labels.tools)
        t_exp = math.ceil(decoded * labels.tools_fps / video_fps - 1e-9)
        t_tol = max(1 if max_mismatch > 0 else 0,
                    math.ceil(max_mismatch * labels.tools_fps / video_fps - 1e-9))
        if abs(Rt - t_exp) > t_tol:
            raise SurgflowError(
                f"video {name}: decoded {decoded} frames at {video_fps:g} fps, so {t_exp} tool rows "
                f"at {labels.tools_fps:g} fps are expected, but {tool_file} has {Rt} rows "
                f"(difference {abs(Rt - t_exp)} > tolerance {t_tol} rows); check that the "
                f"annotation belongs to this video, or raise --max-mismatch")
        trows = _rows_for(n, fps, labels.tools_fps)
        padded = int((trows >= Rt).sum())
        tools = labels.tools[np.minimum(trows, Rt - 1)].astype(np.float32)
        if Rt == t_exp:
            notes.append(f"tools: {Rt} rows = ceil({decoded} / {video_fps / labels.tools_fps:g})")
        elif Rt < t_exp:
            notes.append(f"tools: {t_exp - Rt} row(s) missing at the end (within tolerance "
                         f"{t_tol}): padded {padded} output frame(s) by repeating the last row")
        else:
            notes.append(f"tools: {Rt - t_exp} extra row(s) ignored")
    return n, phase, tools, "; ".join(notes), R, Rt


# --------------------------------------------------------------------------------------------
# per-video work
# --------------------------------------------------------------------------------------------
def video_checksum(folder: Path) -> str:
    """sha256 over the stored frames and labels (file names included, meta.json excluded)."""
    h = hashlib.sha256()
    for name in DATA_FILES:
        p = folder / name
        if not p.exists():
            continue
        h.update(name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8 [H, W, 3] -> JPEG bytes exactly as the store writes them."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _source_info(raw) -> dict:
    info = {"video": str(raw.video_path), "files": {}}
    for p in raw.sources:
        p = Path(p)
        info["files"][p.name] = p.stat().st_size if p.exists() else None
    return info


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # inside the temporary folder; fsync before the folder rename
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def prepare_video(raw, out: Path, fps: float, size: tuple[int, int], max_mismatch: int,
                  quality: int = JPEG_QUALITY, show_progress: bool = False) -> dict:
    """Prepare one RawVideo into out/<name>/ (via a temporary folder); returns its manifest entry."""
    labels = raw.load()  # annotation errors first: no decoding for a video that cannot be used
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
            try:
                n, phase, tools, alignment, R, Rt = align_labels(
                    raw.name, n_out, stats["decoded_frames"], stats["video_fps"], fps, labels,
                    max_mismatch, phase_file, tool_file)
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
            "checksum": video_checksum(tmp),
            "source": _source_info(raw),
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


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        atomic_write_text(probe, "ok")
        probe.unlink()
    except OSError as e:
        raise SurgflowError(f"cannot write to output folder {out} ({e.strerror or e}); choose a "
                            f"writable OUT or fix its permissions") from None


def _entry_complete(out: Path, name: str, entry: dict, raw=None) -> bool:
    folder = out / name
    if entry.get("status") != "done" or not (folder / "index.npy").is_file():
        return False
    if raw is not None and entry.get("source", {}).get("files") != _source_info(raw)["files"]:
        return False  # the raw files changed since
    return video_checksum(folder) == entry.get("checksum")


def load_manifest(out: Path) -> Optional[dict]:
    path = Path(out) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SurgflowError(f"{path}: unreadable manifest ({e}); delete it and re-run prepare") from None


def prepare(layout: str, raw_root, out, fps: float = 1.0, size: tuple[int, int] = (216, 384),
            workers: int = 1, max_mismatch: int = 5, videos: Optional[list[str]] = None) -> PrepareResult:
    """Prepare every video of a raw dataset (see module docstring). Never raises for one bad
    video: failures are collected in the result; the caller decides the exit status."""
    from surgflow.data.layouts import get_layout

    raw_root, out = Path(raw_root), Path(out)
    if fps <= 0:
        raise SurgflowError(f"--fps must be > 0, got {fps}")
    if not raw_root.is_dir():
        raise SurgflowError(f"raw dataset folder not found: {raw_root}; check RAW_ROOT")
    raws = get_layout(layout)(raw_root)
    if videos is not None:
        raws = [r for r in raws if r.name in set(videos)]
    _check_writable(out)
    header = {
        "format_version": FORMAT_VERSION, "layout": layout, "fps": float(fps),
        "size": [int(size[0]), int(size[1])], "storage": STORAGE,
        "phase_names": raws[0].phase_names if raws else [],
        "tool_names": raws[0].tool_names if raws else [],
    }
    manifest = load_manifest(out)
    if manifest is None:
        manifest = dict(header, raw_root=str(raw_root), videos={})
    else:
        for k, v in header.items():
            if manifest.get(k) != v:
                raise SurgflowError(
                    f"{out / 'manifest.json'}: this folder was prepared with {k}={manifest.get(k)!r}, "
                    f"now {k}={v!r}; use another OUT folder or delete {out}")
    # stale temporary folders of an interrupted run
    for p in out.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)

    todo, skipped = [], []
    for raw in raws:
        entry = manifest["videos"].get(raw.name)
        if entry and _entry_complete(out, raw.name, entry, raw):
            skipped.append(raw.name)
        else:
            todo.append(raw.name)
            manifest["videos"].pop(raw.name, None)
            if (out / raw.name).exists():
                shutil.rmtree(out / raw.name)  # partial or stale: redo it
    atomic_write_json(out / "manifest.json", manifest)

    show = workers <= 1  # a per-video frame bar only when videos are done one at a time
    jobs = [(layout, str(raw_root), name, str(out), float(fps), tuple(size), int(max_mismatch), show)
            for name in todo]
    done, failed = [], {}
    bar = progress(total=len(jobs), desc="prepare", unit="video")

    def finish(name, entry, err):
        if err is None:
            manifest["videos"][name] = entry
            manifest["videos"] = dict(sorted(manifest["videos"].items()))
            atomic_write_json(out / "manifest.json", manifest)
            done.append(name)
        else:
            failed[name] = err
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                finish(*_worker(job))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("fork")) as ex:
                futures = [ex.submit(_worker, j) for j in jobs]
                for fut in as_completed(futures):
                    finish(*fut.result())
    finally:
        bar.close()
    return PrepareResult(done, skipped, failed, manifest)


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


def check(out) -> list[str]:
    """Verify a prepared dataset; returns a list of problems (empty = OK)."""
    out = Path(out)
    manifest = load_manifest(out)
    if manifest is None:
        return [f"{out / 'manifest.json'}: missing; run `surgflow prepare` first"]
    problems = []
    for name, entry in progress(manifest.get("videos", {}).items(), desc="check", unit="video"):
        folder = out / name
        if not folder.is_dir():
            problems.append(f"{name}: folder {folder} missing; re-run prepare to redo it")
            continue
        try:
            index = np.load(folder / "index.npy")
            phase = np.load(folder / "phase.npy")
        except (OSError, ValueError) as e:
            problems.append(f"{name}: cannot read index/labels ({e}); re-run prepare to redo it")
            continue
        n = entry.get("frames")
        if len(index) != n + 1 or len(phase) != n:
            problems.append(f"{name}: manifest says {n} frames, index has {len(index) - 1}, phase "
                            f"labels {len(phase)}; re-run prepare to redo it")
        size = (folder / "frames.bin").stat().st_size if (folder / "frames.bin").exists() else -1
        if size != int(index[-1]):
            problems.append(f"{name}: frames.bin has {size} bytes, index expects {int(index[-1])}; "
                            f"re-run prepare to redo it")
        if manifest.get("tool_names"):
            if not (folder / "tools.npy").exists() or len(np.load(folder / "tools.npy")) != n:
                problems.append(f"{name}: tools.npy missing or of wrong length; re-run prepare")
        if video_checksum(folder) != entry.get("checksum"):
            problems.append(f"{name}: checksum mismatch (stored data changed or corrupt); re-run "
                            f"prepare to redo it")
    for p in out.glob(".tmp-*"):
        problems.append(f"{p}: leftover temporary folder of an interrupted run (ignored; removed by "
                        f"the next prepare)")
    return problems


def format_failures(failed: dict[str, str]) -> str:
    return "\n".join(f"  {name}: {msg}" for name, msg in sorted(failed.items()))


def print_summary(res: PrepareResult, out: Path, file=sys.stdout) -> None:
    n_frames = sum(e["frames"] for e in res.manifest["videos"].values())
    print(f"prepared {len(res.done)} video(s), skipped {len(res.skipped)} already complete, "
          f"failed {len(res.failed)}; {len(res.manifest['videos'])} video(s), {n_frames} frames "
          f"in {out}", file=file)
