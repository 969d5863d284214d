"""Video input shared by `surgflow prepare` and online `surgflow predict`: open with PyAV, decode in
order, sample by timestamp, honour the rotation metadata, resize with swscale.

Both commands go through `open_video` + `sample_frames`, so a model sees in `predict` the frames
`eval` reads from the prepared store (same sampled frame, same orientation, same resize).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from surgflow.io_utils import SurgflowError

CORRUPT_FIX = ("the file is corrupt, truncated or not a video: re-download or re-encode it "
               "(e.g. `ffmpeg -i in.mp4 -c:v libx264 out.mp4`), or remove it from the raw folder")
CFR_FIX = "re-encode it at a constant rate, e.g. `ffmpeg -i in.mp4 -fps_mode cfr -r 25 -c:v libx264 out.mp4`"
# Frame intervals spread more than this (relative to the median) make a video variable-rate.
VFR_TOLERANCE = 0.25


def is_stream(source) -> bool:
    """URLs (rtsp://, http://, udp://, ...) and devices are streams; existing files are not."""
    return "://" in str(source) or not Path(source).is_file()


def open_video(source, live: Optional[bool] = None):
    """Open a file (or, for `predict`, a stream URL) with PyAV -> (container, stream, rate).

    SurgflowError names the source and the fix when it cannot be read. A stream without a declared
    frame rate is sampled by its timestamps alone (rate only sets the half-frame rounding: 25)."""
    import av  # heavy: av; store, score and view import this module without decoding

    source = str(source)
    url = "://" in source
    live = is_stream(source) if live is None else live
    if not url and not Path(source).is_file():
        raise SurgflowError(f"video file not found: {source} does not exist; add it (in a raw "
                            f"dataset: or remove its annotation files), or pass a stream URL")
    try:
        container = av.open(source, mode="r", timeout=(30.0, 30.0) if url else None)
    except Exception as e:  # av.error.* (InvalidDataError, HTTPError, ...) and OSError
        raise SurgflowError(f"{source}: cannot open video ({e}); {CORRUPT_FIX}") from None
    if not container.streams.video:
        container.close()
        raise SurgflowError(f"{source}: no video stream; {CORRUPT_FIX}")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threads: decoding stays sequential and in order
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        if not live:
            container.close()
            raise SurgflowError(f"{source}: unknown frame rate; {CFR_FIX}")
        rate = 25
    return container, stream, Fraction(rate)


def sample_by_timestamp(frames: Iterable, time_base, rate: Fraction, fps: float,
                        on_frame=None) -> Iterator[tuple[int, Any]]:
    """Yield (target index i, decoded frame) for target times i / fps from frames decoded in order.

    Target i takes the decoded frame whose timestamp (relative to the first frame) is closest to
    i / fps; on an exact tie (the target halfway between two frames) the later frame. A frame may
    serve several targets when fps exceeds the video's rate. The boundary between frames k and
    k + 1 is the midpoint of their actual timestamps, so variable-rate video gets the closest
    frame too (the average rate would be off by a frame where intervals vary); this needs frame
    k + 1 before frame k's targets are known (one decoded frame of look-ahead). The last frame
    serves the targets up to half a nominal interval (1 / rate) after it.

    on_frame: called with every frame, served or not, in order, just before its targets are yielded.
    """
    step = Fraction(fps).limit_denominator(1000)
    rate = Fraction(rate)
    tb = Fraction(time_base) if time_base is not None else None
    # Exact integers, not Fractions per frame (those cost more than the resize of the frames
    # kept). Time unit 1 / (b r) s: a frame at (pts - pts0) * a / b s is T = (pts - pts0) a r,
    # frame k without pts (t = k s / r) is T = k s b; target i (t = i q / p) lies before the
    # midpoint of frames k, k + 1 when 2 i q b r < p (T_k + T_k+1).
    p, q, r, s = step.numerator, step.denominator, rate.numerator, rate.denominator
    a, b = (tb.numerator, tb.denominator) if tb is not None else (0, 1)
    lhs_unit = 2 * q * b * r
    i, pts0 = 0, None
    prev = prev_t = None

    def serve(frame, bound):  # every target before `bound` (in p-scaled doubled units)
        nonlocal i
        if on_frame is not None:
            on_frame(frame)
        while i * lhs_unit < bound:
            yield i, frame
            i += 1

    it = iter(frames)
    k = 0
    while True:
        try:
            frame = next(it)
        except StopIteration:
            break
        except Exception:
            if prev is not None:  # a decode error: the frame in hand still serves its targets
                yield from serve(prev, p * (2 * prev_t + s * b))
            raise
        if frame.pts is not None and tb is not None:
            pts0 = frame.pts if pts0 is None else pts0
            t = (frame.pts - pts0) * a * r
        else:
            t = k * s * b
        if prev is not None:
            yield from serve(prev, p * (prev_t + t))
        prev, prev_t = frame, t
        k += 1
    if prev is not None:
        yield from serve(prev, p * (2 * prev_t + s * b))


def rotation_of(frame) -> int:
    """Counter-clockwise display rotation (degrees, multiple of 90, in [0, 360)) from the frame's
    display matrix; 0 when absent. Other angles cannot be honoured: see `sample_frames`."""
    try:
        deg = int(round(frame.rotation or 0))
    except Exception:  # no display matrix side data
        return 0
    return deg % 360


def frame_to_rgb(frame, size: Optional[tuple[int, int]] = None, reformatter=None) -> np.ndarray:
    """A decoded av.VideoFrame -> uint8 RGB [H, W, 3] in display orientation, resized by swscale
    when `size` (H, W) is given: the one resize of the store, shared by online prediction. Pass
    one `av.video.reformatter.VideoReformatter` per video: reusing its swscale context is 3x faster
    than a new one per frame, with identical pixels. (Not a module-wide cache: a context alive
    when prepare forks its workers hangs them.)"""
    rot = rotation_of(frame)
    if rot % 90 == 0 and rot:  # display matrix: rotate to display orientation, then resize
        import av  # heavy: av; store, score and view import this module without decoding

        img = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), k=rot // 90))
        if size is None:
            return img
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        reformatter = None  # the rotated frame has other dimensions: its own context
    if size is None:
        return frame.to_ndarray(format="rgb24")
    if reformatter is None:
        from av.video.reformatter import VideoReformatter  # heavy: av (see open_video)

        reformatter = VideoReformatter()
    h, w = int(size[0]), int(size[1])
    return reformatter.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()


class FrameStats:
    """Counts decoded frames and watches their timestamps (variable frame rate, rotation)."""

    def __init__(self, rate: Fraction, time_base, declared: int):
        self.video_fps, self.declared_frames, self.decoded_frames = float(rate), int(declared), 0
        self.time_base = float(time_base) if time_base is not None else None
        self.rotation: Optional[int] = None
        self._last_pts: Optional[int] = None
        self.min_dt = self.max_dt = None  # seconds between consecutive frames

    def see(self, frame) -> None:
        self.decoded_frames += 1
        if self.rotation is None:
            self.rotation = rotation_of(frame)
        if frame.pts is None or self.time_base is None:
            return
        if self._last_pts is not None and frame.pts > self._last_pts:
            dt = (frame.pts - self._last_pts) * self.time_base
            self.min_dt = dt if self.min_dt is None else min(self.min_dt, dt)
            self.max_dt = dt if self.max_dt is None else max(self.max_dt, dt)
        self._last_pts = frame.pts

    @property
    def vfr(self) -> bool:
        """True when frame intervals vary by more than VFR_TOLERANCE of the nominal interval."""
        if self.min_dt is None:
            return False
        nominal = 1.0 / self.video_fps
        return (self.max_dt - self.min_dt) > VFR_TOLERANCE * nominal

    def as_dict(self) -> dict:
        return {"decoded_frames": self.decoded_frames, "video_fps": self.video_fps,
                "declared_frames": self.declared_frames, "vfr": self.vfr,
                "rotation": int(self.rotation or 0), "min_dt": self.min_dt, "max_dt": self.max_dt}


def _decode_checked(container, stream, source, stats: FrameStats) -> Iterator[Any]:
    """Decode in order, counting frames; a decode error names the file and how far it got."""
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except Exception as e:
            raise SurgflowError(f"{source}: decoding failed after {stats.decoded_frames} frames "
                                f"({e}); {CORRUPT_FIX}") from None
        stats.see(frame)
        yield frame


def sample_frames(source, fps: float, size: Optional[tuple[int, int]] = None,
                  stats: Optional[dict] = None, opened=None, keep_frame: bool = False,
                  checked: bool = True, on_decoded=None) -> Iterator[tuple]:
    """Decode `source` once and yield (i, rgb uint8 [H, W, 3]) for target times i / fps (the rule
    of `sample_by_timestamp`), in display orientation and resized to `size` (H, W).

    stats: a dict updated (also while iterating) with decoded_frames, video_fps, declared_frames,
    vfr, rotation. opened: an `open_video` result to use (and close). keep_frame: yield
    (i, rgb, av.VideoFrame) (`predict --render` draws on the decoded frame). checked: decode
    errors raise SurgflowError naming the file; False lets PyAV's error through (a live stream
    keeps what it has). on_decoded: called with every decoded av.VideoFrame, sampled or not,
    before the sample it may serve is yielded (`predict --render` at the source rate)."""
    container, stream, rate = opened if opened is not None else open_video(source)
    fs = FrameStats(rate, stream.time_base, int(stream.frames or 0))
    try:
        if checked:
            decoded = _decode_checked(container, stream, source, fs)
        else:
            decoded = (fs.see(f) or f for f in container.decode(stream))
        from av.video.reformatter import VideoReformatter  # heavy: av (see open_video)

        reformatter = VideoReformatter()  # one swscale context per video
        for i, frame in sample_by_timestamp(decoded, stream.time_base, rate, fps,
                                            on_frame=on_decoded):
            rgb = frame_to_rgb(frame, size, reformatter)
            if stats is not None:
                stats.update(fs.as_dict())
            yield (i, rgb, frame) if keep_frame else (i, rgb)
    finally:
        if stats is not None:
            stats.update(fs.as_dict())
        container.close()


def vfr_note(source, stats: dict, fps: float) -> str:
    """How a variable-rate video was sampled ("" for constant-rate video); `stats` from
    `sample_frames`."""
    if not stats.get("vfr"):
        return ""
    return (f"{source} has a VARIABLE frame rate (frame intervals {1e3 * stats['min_dt']:.1f} to "
            f"{1e3 * stats['max_dt']:.1f} ms, average {stats['video_fps']:g} fps): prepare samples "
            f"frame i at time i / {fps:g} s by presentation timestamp, while annotation rows are "
            f"read at a constant rate, so decoded frames and annotation rows may disagree; {CFR_FIX}")


def rotation_note(degrees: int) -> str:
    """What was done about the display matrix ("" when there is none)."""
    if not degrees:
        return ""
    if degrees % 90:
        return (f"WARNING: the display matrix rotates the video by {degrees} degrees, not a multiple "
                f"of 90: ignored (frames kept as coded); rotate it with ffmpeg first")
    return (f"display matrix: frames rotated {degrees} degrees counter-clockwise to display "
            f"orientation before resizing")
