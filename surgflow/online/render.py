"""Overlay video for `surgflow predict --render`: the frame, the time (mm:ss) and current phase with
its confidence, the predicted phase ribbon so far, an optional ground-truth ribbon (`--gt`), a
colour legend and per-instrument remaining-time bars.

By default the overlay plays at the source frame rate: every decoded frame is written, with the
latest prediction held until the next sampled frame (`SourceRateOverlay`); `--render-at sampling`
writes one frame per prediction instead. Drawn with PIL ImageDraw; encoded with PyAV (libx264,
yuv420p). Frames are written as they come, so a stream that stops mid-way still leaves a playable
file once `close()` runs.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from surgflow.data.video import frame_to_rgb
from surgflow.io_utils import SurgflowError, atomic_path

# tab10-like palette; phase i gets colour i (cycled).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
NO_LABEL = (50, 50, 50)  # ribbon pixels not predicted yet / unlabelled ground truth


def _even(x: int) -> int:
    return max(2, int(x) // 2 * 2)


def mmss(seconds: float) -> str:
    """83.4 -> '01:23' (hours fold into minutes: '75:00')."""
    s = int(max(0.0, seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def colour(pid: int) -> tuple[int, int, int]:
    return PALETTE[pid % len(PALETTE)] if pid >= 0 else NO_LABEL


class OverlayRenderer:
    """Write an mp4 with the prediction overlay.

    fps: output frame rate. sample_fps: the prediction rate (ribbons are indexed by prediction).
    expected_frames: predictions expected for the whole video (sizes the ribbons; None = grow).
    gt: ground-truth phase ids at the prediction rate, int [N] (-1 = unlabelled), or None.
    width: output width in pixels (the frame is scaled to it, keeping its aspect ratio).
    """

    def __init__(self, path: str | Path, fps: float, phase_names: list[str], instruments: list[str],
                 horizon: float, width: int = 640, expected_frames: int | None = None,
                 sample_fps: Optional[float] = None, gt: Optional[np.ndarray] = None):
        import av  # heavy: av, only when an overlay is written

        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mkv", ".mov"):
            raise SurgflowError(f"--render {self.path}: use an .mp4 file name")
        self.fps = float(fps)
        self.sample_fps = float(sample_fps or fps)
        self.phase_names = list(phase_names)
        self.instruments = list(instruments)
        self.horizon = float(horizon)
        self.width = _even(width)
        self.gt = None if gt is None else np.asarray(gt, dtype=np.int64)
        self.expected = max(expected_frames or 0, 0 if self.gt is None else len(self.gt)) or None
        self.timeline: list[int] = []
        self._last_pred_frame = None
        self._av = av
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self.container = None
        self.stream = None
        self.frames = 0

    # Layout: video on top, then a panel: title row, ribbon(s) with a time axis, legend, one row
    # per instrument.
    def _legend_rows(self, font) -> list[list[tuple[int, str]]]:
        rows, row, x = [], [], 6
        for i, name in enumerate(self.phase_names):
            w = 16 + int(font.getlength(name)) + 14
            if row and x + w > self.width - 6:
                rows.append(row)
                row, x = [], 6
            row.append((i, name))
            x += w
        return rows + ([row] if row else [])

    def _open(self, frame_h: int, frame_w: int):
        av = self._av
        self.font = self._font()
        self.legend = self._legend_rows(self.font)
        self.video_h = _even(round(frame_h * self.width / frame_w))
        self.row = 18
        ribbons = 2 if self.gt is not None else 1
        self.panel_h = _even(8 + self.row + ribbons * 16 + 16 + self.row * len(self.legend)
                             + self.row * len(self.instruments) + 8)
        self.height = self.video_h + self.panel_h
        self.container = av.open(str(self._tmp), mode="w", format="mp4")
        rate = Fraction(self.fps).limit_denominator(1000)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.time_base = 1 / rate
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "23", "preset": "veryfast"}

    @staticmethod
    def _font():
        try:
            return ImageFont.load_default(size=13)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()

    def _ribbon(self, ids: np.ndarray, n_total: int, width: int) -> np.ndarray:
        """uint8 [12, width, 3]: prediction index shown in each pixel column, coloured by phase."""
        bar = np.full((12, width, 3), NO_LABEL, np.uint8)
        idx = (np.arange(width) * n_total) // width  # prediction index in each pixel column
        shown = idx < len(ids)
        if shown.any():
            table = np.asarray([colour(i) for i in range(len(PALETTE))] + [NO_LABEL], np.uint8)
            sel = ids[idx[shown]]
            bar[:, shown] = table[np.where(sel >= 0, sel % len(PALETTE), len(PALETTE))]
        return bar

    def draw(self, frame: np.ndarray, pred: dict, time_s: Optional[float] = None) -> np.ndarray:
        """uint8 [h, w, 3] + the prediction dict held for it (OnlinePredictor.step output) + the
        frame's time in seconds -> uint8 [H, W, 3]."""
        if self.container is None:
            self._open(frame.shape[0], frame.shape[1])
        if pred.get("frame") != self._last_pred_frame and "phase_prob" in pred:
            self._last_pred_frame = pred.get("frame")
            self.timeline.append(int(pred["phase_id"]))
        if time_s is None:
            time_s = (len(self.timeline) - 1) / self.sample_fps
        img = Image.new("RGB", (self.width, self.height), (20, 20, 20))
        img.paste(Image.fromarray(frame).resize((self.width, self.video_h), Image.BILINEAR), (0, 0))
        d = ImageDraw.Draw(img)
        font = self.font
        n_total = max(len(self.timeline), self.expected or 0, 1)
        total_s = n_total / self.sample_fps
        y = self.video_h + 6
        if "phase_prob" in pred:
            pid = int(pred["phase_id"])
            text = f"{pred.get('phase', pid)}  {100 * pred['confidence']:.0f}%"
            tw = int(font.getlength(text))
            d.rectangle([6, 6, 22 + tw, 26], fill=(0, 0, 0))
            d.rectangle([6, 6, 12, 26], fill=colour(pid))
            d.text((16, 9), text, fill=(255, 255, 255), font=font)
        clock = f"{mmss(time_s)} / {mmss(total_s)}"
        cw = int(font.getlength(clock))
        d.rectangle([self.width - cw - 14, 6, self.width - 6, 26], fill=(0, 0, 0))
        d.text((self.width - cw - 10, 9), clock, fill=(255, 255, 255), font=font)
        d.text((6, y), f"time {mmss(time_s)}" + (f"   predicted: {text}" if "phase_prob" in pred
                                                  else ""), fill=(230, 230, 230), font=font)
        y += self.row
        # Ribbons: predicted phases so far, then the ground truth (whole video), one label column.
        label_w = 44
        x0, x1 = 6 + label_w, self.width - 6
        rows = [("pred", np.asarray(self.timeline, np.int64))]
        if self.gt is not None:
            rows.append(("truth", self.gt))
        for name, ids in rows:
            d.text((6, y - 1), name, fill=(200, 200, 200), font=font)
            img.paste(Image.fromarray(self._ribbon(ids, n_total, x1 - x0)), (x0, y))
            y += 16
        # Cursor at the current time, and a time axis: start, middle, end in mm:ss.
        cx = x0 + int((x1 - x0) * min(time_s * self.sample_fps / n_total, 1.0))
        d.line([cx, y - 16 * len(rows) - 2, cx, y - 3], fill=(255, 255, 255), width=1)
        for frac in (0.0, 0.5, 1.0):
            label = mmss(total_s * frac)
            lw = int(font.getlength(label))
            lx = min(max(x0 + int((x1 - x0) * frac) - lw // 2, x0), x1 - lw)
            d.text((lx, y - 2), label, fill=(160, 160, 160), font=font)
        y += 16
        # Legend: one swatch per phase.
        for legend_row in self.legend:
            x = 6
            for i, name in legend_row:
                d.rectangle([x, y + 3, x + 10, y + 13], fill=colour(i))
                d.text((x + 14, y + 1), name, fill=(220, 220, 220), font=font)
                x += 16 + int(font.getlength(name)) + 14
            y += self.row
        # Remaining time per instrument, bar length = minutes / horizon.
        if "anticipation_min" in pred and self.instruments:
            label_w = 90
            x0, x1 = 6 + label_w, self.width - 70
            for name, minutes in zip(self.instruments, pred["anticipation_min"]):
                m = float(np.clip(minutes, 0.0, self.horizon or minutes))
                frac = m / self.horizon if self.horizon > 0 else 0.0
                d.text((6, y), name[:12], fill=(230, 230, 230), font=font)
                d.rectangle([x0, y + 2, x1, y + 12], outline=(90, 90, 90))
                # Red when the instrument is imminent, green when far (or beyond the horizon).
                col = (int(230 * (1 - frac)), int(200 * frac), 60)
                d.rectangle([x0, y + 2, x0 + int((x1 - x0) * frac), y + 12], fill=col)
                d.text((x1 + 6, y), f"{m:.1f} min", fill=(230, 230, 230), font=font)
                y += self.row
        return np.asarray(img)

    def write(self, frame: np.ndarray, pred: dict, time_s: Optional[float] = None) -> None:
        out = self.draw(frame, pred, time_s)
        vf = self._av.VideoFrame.from_ndarray(out, format="rgb24")
        vf.pts = self.frames
        vf.time_base = self.time_base
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        """Flush the encoder and move the file into place (also after a stream stopped mid-way);
        when the flush fails (a full disk), the temporary file is removed and the error raised."""
        if self.container is not None:
            container, self.container = self.container, None
            try:
                try:
                    if ok:
                        for packet in self.stream.encode():
                            container.mux(packet)
                finally:
                    container.close()
            except BaseException:
                try:
                    self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
                except RuntimeError:
                    pass
                raise
        if self.frames == 0:
            ok = False  # nothing to show: leave no empty file behind
        try:
            if ok:
                self._ctx.__exit__(None, None, None)
            else:
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass


class SourceRateOverlay:
    """Feed every decoded frame (`frame`) and every prediction (`prediction`) in decode order; each
    decoded frame is written with the latest prediction made at or before it (held between samples).

    A decoded frame is held back until the next one arrives, because the sampler hands out the
    prediction for a frame right after that frame was decoded."""

    def __init__(self, renderer: OverlayRenderer, time_base=None):
        self.renderer, self.to_rgb = renderer, frame_to_rgb
        self.time_base = float(time_base) if time_base is not None else None
        self.pending = None
        self.pred = None
        self.pts0 = None
        self.k = 0

    def frame(self, vframe) -> None:
        if self.pending is not None and self.pred is not None:
            self._flush()
        self.pending = vframe

    def prediction(self, pred: dict) -> None:
        self.pred = pred

    def _flush(self) -> None:
        f = self.pending
        if f.pts is not None and self.time_base is not None:
            self.pts0 = f.pts if self.pts0 is None else self.pts0
            t = (f.pts - self.pts0) * self.time_base
        else:
            t = self.k / self.renderer.fps
        self.renderer.write(self.to_rgb(f), self.pred, t)
        self.pending = None
        self.k += 1

    def close(self, ok: bool = True) -> None:
        if self.pending is not None and self.pred is not None:
            self._flush()
        self.renderer.close(ok=ok and self.renderer.frames > 0)
