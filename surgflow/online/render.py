"""Overlay video for `surgflow predict --render`: the frame, the current phase with its confidence,
the phase timeline so far (one coloured column per frame) and per-instrument remaining-time bars.

Drawn with PIL ImageDraw on numpy frames; encoded with PyAV (libx264, yuv420p). Frames are written
as they come, so a stream that stops mid-way still leaves a playable file once `close()` runs.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from surgflow.io_utils import SurgflowError, atomic_path

# tab10-like palette; phase i gets colour i (cycled).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _even(x: int) -> int:
    return max(2, int(x) // 2 * 2)


class OverlayRenderer:
    """Write an mp4 with the prediction overlay, one output frame per predicted frame.

    width: output width in pixels (the frame is scaled to it, keeping its aspect ratio).
    """

    def __init__(self, path: str | Path, fps: float, phase_names: list[str], instruments: list[str],
                 horizon: float, width: int = 640, expected_frames: int | None = None):
        import av

        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mkv", ".mov"):
            raise SurgflowError(f"--render {self.path}: use an .mp4 file name")
        self.fps = float(fps)
        self.phase_names = list(phase_names)
        self.instruments = list(instruments)
        self.horizon = float(horizon)
        self.width = _even(width)
        self.expected = expected_frames
        self.timeline: list[int] = []
        self._av = av
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self.container = None
        self.stream = None
        self.frames = 0

    # Layout: video on top, then a panel: title row, timeline, one row per instrument.
    def _open(self, frame_h: int, frame_w: int):
        av = self._av
        self.video_h = _even(round(frame_h * self.width / frame_w))
        self.row = 18
        self.panel_h = _even(8 + self.row * 2 + 14 + self.row * len(self.instruments) + 8)
        self.height = self.video_h + self.panel_h
        self.container = av.open(str(self._tmp), mode="w", format="mp4")
        rate = Fraction(self.fps).limit_denominator(1000)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.time_base = 1 / rate
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "23", "preset": "veryfast"}

    def _font(self):
        from PIL import ImageFont

        try:
            return ImageFont.load_default(size=13)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()

    def draw(self, frame: np.ndarray, pred: dict) -> np.ndarray:
        """uint8 [h, w, 3] + one prediction dict (OnlinePredictor.step output) -> uint8 [H, W, 3]."""
        from PIL import Image, ImageDraw

        if self.container is None:
            self._open(frame.shape[0], frame.shape[1])
        img = Image.new("RGB", (self.width, self.height), (20, 20, 20))
        img.paste(Image.fromarray(frame).resize((self.width, self.video_h), Image.BILINEAR), (0, 0))
        d = ImageDraw.Draw(img)
        font = self._font()
        y = self.video_h + 6
        # Current phase and confidence, also as a label on the video.
        if "phase_prob" in pred:
            pid = int(pred["phase_id"])
            self.timeline.append(pid)
            colour = PALETTE[pid % len(PALETTE)]
            text = f"{pred.get('phase', pid)}  {100 * pred['confidence']:.0f}%"
            d.rectangle([6, 6, 14 + 8 * len(text), 26], fill=(0, 0, 0))
            d.rectangle([6, 6, 12, 26], fill=colour)
            d.text((16, 9), text, fill=(255, 255, 255), font=font)
            d.text((6, y), f"frame {pred.get('frame', len(self.timeline) - 1)}  phase: {text}",
                   fill=(230, 230, 230), font=font)
            y += self.row
            # Timeline so far: one column per frame, compressed to the bar width.
            x0, x1 = 6, self.width - 6
            n_total = max(len(self.timeline), self.expected or 0, 1)
            ids = np.asarray(self.timeline)
            cols = np.arange(x1 - x0)
            idx = (cols * n_total) // (x1 - x0)  # frame shown in each pixel column
            bar = np.full((12, x1 - x0, 3), 50, np.uint8)
            shown = idx < len(ids)
            bar[:, shown] = np.asarray([PALETTE[i % len(PALETTE)] for i in ids[idx[shown]]], np.uint8)
            img.paste(Image.fromarray(bar), (x0, y))
            y += 14 + 4
        else:
            y += self.row + 18
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

    def write(self, frame: np.ndarray, pred: dict) -> None:
        out = self.draw(frame, pred)
        vf = self._av.VideoFrame.from_ndarray(out, format="rgb24")
        vf.pts = self.frames
        vf.time_base = self.time_base
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        """Flush the encoder and move the file into place (also after a stream stopped mid-way)."""
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None
        if self.frames == 0:
            ok = False  # nothing to show: leave no empty file behind
        try:
            if ok:
                self._ctx.__exit__(None, None, None)
            else:
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass
