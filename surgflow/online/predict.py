"""`surgflow predict`: online prediction over a video file or any stream PyAV opens.

The input is decoded sequentially, sampled at the model's frame rate by timestamp and resized
exactly like `surgflow prepare` does, then (by default) JPEG round-tripped like the prepared store,
so each sampled frame reaches the model bit-identical to the prepared frame `surgflow eval` reads:
streaming outputs equal offline outputs. Predictions are
written in the files `surgflow score` reads (`<video>-phase.txt`, `-tool.txt`,
`-anticipation.txt`) with the folder's row rate in `fps.json`, so `surgflow score` needs no
rate flags; `--render` writes an overlay mp4 (surgflow/online/render.py).

A stream that stops mid-way (decode error, EOF, Ctrl-C) keeps the predictions made so far: the
files are written and closed, and the summary says where and why it stopped.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from surgflow.data.annotations import parse_phase_file
from surgflow.data.store_format import roundtrip as store_roundtrip  # prepare's JPEG round trip
from surgflow.data.video import frame_to_rgb, is_stream, open_video, rotation_note, sample_frames
from surgflow.evaluation.score import evaluation_of, task_names
from surgflow.evaluation.rates import FPS_SIDECAR, read_fps_sidecar, write_fps_sidecar
from surgflow.io_utils import SurgflowError, progress
from surgflow.online.render import OverlayRenderer, SourceRateOverlay
from surgflow.outputs import check_output_file, check_writable_dir, disk_full_error, is_disk_full

def resize_array(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB [h, w, 3] -> [H, W, 3] with the same resampler (swscale via PyAV)."""
    import av  # heavy: av; the predictor imports this module for the array path

    return frame_to_rgb(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"), size)


def _name_for(source: str) -> str:
    if "://" in str(source):
        tail = str(source).rstrip("/").rsplit("/", 1)[-1]
        return Path(tail).stem or "stream"
    return Path(source).stem


def write_predictions(out_dir: Path, video: str, preds: dict[str, np.ndarray], meta) -> list[Path]:
    """Write the files `surgflow score` reads, each task's with its evaluation's writer
    (`<video>-phase.txt` argmax names, `-tool.txt` probabilities, `-anticipation.txt` minutes)."""
    return [path for task in task_names()
            for path in evaluation_of(task).write_predictions(preds, video, Path(out_dir), meta)]


def read_gt_ribbon(path, phase_names, gt_fps: float, fps: float, expected: int | None,
                   inferred: bool) -> np.ndarray:
    """Ground-truth phase ids at the sampling rate (rows i * gt_fps / fps of a `Frame\tPhase`
    file) for the overlay's truth ribbon; refuses a file whose length does not fit the video."""
    _frames, ids = parse_phase_file(path, list(phase_names), what="--gt phase file")
    step = gt_fps / fps
    n = int(len(ids) / step + 1e-9) if step > 0 else 0
    if expected and abs(n - expected) > max(2, 0.05 * expected):
        raise SurgflowError(
            f"--gt {path}: {len(ids)} rows at {gt_fps:g} rows/s cover {n} samples at {fps:g} fps, "
            f"but the video has about {expected}"
            + ("; pass --gt-fps with the file's row rate (e.g. 1 for files written by eval)"
               if inferred else "; check --gt-fps and that the file belongs to this video"))
    pick = np.minimum((np.arange(n) * step).round().astype(np.int64), len(ids) - 1)
    return ids[pick]


def check_folder_rate(out_dir: Path, fps: float) -> None:
    """One folder, one row rate: `surgflow score` reads the rate of every file in a folder from its
    fps.json, so predictions at another rate must not join files already recorded there."""
    recorded = read_fps_sidecar(out_dir)
    if recorded is not None and abs(recorded - fps) > 1e-9:
        raise SurgflowError(
            f"{out_dir / FPS_SIDECAR} records predictions at {recorded:g} fps and this call samples "
            f"at {fps:g} fps; one folder holds one rate: pass another --out (or --fps {recorded:g})")


def predict_video(predictor, source: str, out_dir: str | Path, fps: float | None = None,
                  render: str | Path | None = None, name: str | None = None,
                  live: bool | None = None, max_frames: int | None = None,
                  match_store: bool = True, log=print, render_at: str = "source",
                  gt: str | Path | None = None, gt_fps: float | None = None) -> dict:
    """Run `predictor` over `source` and write the prediction files into `out_dir`.

    match_store: pass each resized frame through the prepared store's JPEG round trip (prepare's
    encoder, the store's decoder), so the model sees exactly the frames `surgflow eval` reads from a
    prepared dataset and the outputs are equal; False feeds the decoded frames directly.

    render_at: "source" writes every decoded frame with the latest prediction held (plays at the
    video's own rate); "sampling" writes one frame per prediction. gt: a phase file drawn as a
    ground-truth ribbon, rows at gt_fps (default: the video's frame rate, as Cholec80's files).

    Returns {video, frames, files, render, stopped (None or the reason), latency_ms (mean, max)}.
    """
    out_dir = Path(out_dir)
    source = str(source)
    live = is_stream(source) if live is None else live
    if fps is not None and not fps > 0:
        raise SurgflowError(f"--fps {fps:g}: must be > 0 (leave it out to sample at the model's "
                            f"{predictor.fps:g} fps)")
    fps = float(predictor.fps if fps is None else fps)
    if abs(fps - predictor.fps) > 1e-6:
        log(f"note: sampling at {fps:g} fps while the model was trained at {predictor.fps:g} fps; "
            "predictions (and anticipation minutes) assume the model's rate")
    video = name or _name_for(source)
    check_writable_dir(out_dir, "prediction folder", "--out", keep=False)  # before any decoding
    check_folder_rate(out_dir, fps)
    if render is not None:
        check_output_file(render, "--render")
    opened = open_video(source, live=live)
    container, vstream, _rate = opened
    expected = None
    if not live and vstream.duration is not None and vstream.time_base is not None:
        expected = int(float(vstream.duration * vstream.time_base) * fps) + 1
    elif not live and container.duration:
        expected = int(container.duration / 1e6 * fps) + 1

    renderer = tap = None
    if render is not None:
        if render_at not in ("source", "sampling"):
            raise SurgflowError(f"--render-at {render_at!r}: expected source or sampling")
        src_fps = float(_rate) if _rate else fps
        truth = None if gt is None else read_gt_ribbon(gt, predictor.phase_names, gt_fps or src_fps,
                                                       fps, expected, gt_fps is None)
        out_fps = src_fps if render_at == "source" else fps
        renderer = OverlayRenderer(render, out_fps, predictor.phase_names, predictor.instruments,
                                   predictor.horizon, expected_frames=expected, sample_fps=fps,
                                   gt=truth)
        if render_at == "source":
            tap = SourceRateOverlay(renderer, vstream.time_base)
    predictor.reset()
    rows: dict[str, list[np.ndarray]] = {}
    latencies: list[float] = []
    stopped = None
    full: OSError | None = None  # the overlay's disk filled up: predictions are still written
    stats: dict = {}
    limited = False
    # Files get a progress bar; streams print the per-frame latency instead.
    bar = None if live else progress(total=expected, unit="frame", desc=f"predict {video}")
    try:
        try:
            # prepare's decoder, sampler, rotation and resize (surgflow/data/video.py); decode
            # errors reach the handler below, which keeps the predictions made so far
            for index, rgb, vframe in sample_frames(source, fps, predictor.size, stats,
                                                    opened=opened, keep_frame=True, checked=False,
                                                    on_decoded=tap.frame if tap else None):
                if index == 0 and stats.get("rotation"):
                    log(f"note: {rotation_note(stats['rotation'])}")
                if match_store:
                    rgb = store_roundtrip(rgb)
                t0 = time.perf_counter()
                pred = predictor.step(rgb)
                latencies.append(time.perf_counter() - t0)
                for key, value in pred.items():  # every task's decoded arrays
                    if isinstance(value, np.ndarray):
                        rows.setdefault(key, []).append(value)
                if tap is not None:
                    tap.prediction(pred)  # drawn on this and the following decoded frames
                elif renderer is not None:
                    renderer.write(frame_to_rgb(vframe), pred, index / fps)
                if bar is not None:
                    bar.update(1)
                if live:
                    msg = f"frame {index}: {latencies[-1] * 1e3:.1f} ms"
                    if "phase" in pred:
                        msg += f"  {pred['phase']} ({100 * pred['confidence']:.0f}%)"
                    log(msg)
                if max_frames is not None and len(latencies) >= max_frames:
                    limited = True  # stopped on request: not a truncated video
                    break
        except KeyboardInterrupt:
            stopped = "interrupted (Ctrl-C)"
        except Exception as e:  # av decode/demux errors: keep what we have
            if is_disk_full(e):  # writing the overlay, not decoding
                full = e
            stopped = f"decoding stopped with {type(e).__name__}: {e}"
    finally:
        if bar is not None:
            bar.close()
        container.close()
        n = len(latencies)
        if stopped is None and not limited and expected is not None and not live and n < expected - 1:
            stopped = f"the video ended after {n} of ~{expected} expected frames (truncated file?)"
        try:
            if tap is not None:
                tap.close(ok=n > 0 and full is None)
            elif renderer is not None:
                renderer.close(ok=n > 0 and full is None)
        except OSError as e:  # the muxer flushes on close: a full disk often shows only here
            if not is_disk_full(e):
                raise
            full = e
        preds = {k: np.stack(v).astype(np.float32) for k, v in rows.items()}
        written: list[Path] = []
        if n > 0:
            written = write_predictions(out_dir, video, preds, predictor.meta)
            write_fps_sidecar(out_dir, fps, "surgflow predict: <video>-phase/-tool/-anticipation.txt")
    if full is not None:
        full = OSError(full.errno, full.strerror, str(render))  # not the atomic write's temp name
        of = f" of ~{expected}" if expected and n < expected - 1 else ""
        kept = f"the {n}{of} predictions made were written to {out_dir}; " if n else ""
        raise disk_full_error(full, Path(render).parent, f"{kept}the overlay {render} was not "
                              f"written; free space or pass another --render path") from None
    if n == 0:
        raise SurgflowError(f"no frame could be decoded from {source}" + (f" ({stopped})" if stopped else ""))
    lat = np.asarray(latencies) * 1e3
    return {"video": video, "frames": n, "files": [str(p) for p in written],
            "render": str(render) if renderer is not None else None, "stopped": stopped,
            "latency_ms": {"mean": float(lat.mean()), "p50": float(np.median(lat)),
                           "max": float(lat.max())},
            "predictions": preds}
