"""Rendering of the synthetic surgeries (data/synth.py plans the labels): phase-specific tissue
canvases, metallic instrument sprites, precursor shadows, and h264 encoding with PyAV.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from surgflow.data.synth import ANNOUNCED, FPS, Plan
from surgflow.io_utils import atomic_path
from surgflow.labels import CHOLEC80_TOOLS

# Texture parameters per phase: blob scale (fraction of height), stripe angle (deg), stripe
# frequency (cycles per frame height), stripe amplitude, speckle density.
_TEXTURE = [
    (0.50, 0, 0.0, 0.00, 0.000),
    (0.12, 30, 6.0, 0.35, 0.000),
    (0.25, 90, 3.0, 0.25, 0.010),
    (0.08, 150, 9.0, 0.30, 0.000),
    (0.30, 0, 0.0, 0.00, 0.030),
    (0.18, 60, 14.0, 0.20, 0.004),
    (0.70, 120, 2.0, 0.45, 0.000),
]


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def _smooth_noise(rng, h: int, w: int, scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise [h, w] (bilinear upsampling of a coarse grid)."""
    gh, gw = max(2, int(h / scale_px) + 2), max(2, int(w / scale_px) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    ys = np.linspace(0, gh - 1.001, h, dtype=np.float32)
    xs = np.linspace(0, gw - 1.001, w, dtype=np.float32)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    b = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    n = a * (1 - fy) + b * fy
    return (n - n.mean()) / (n.std() + 1e-6)


def _canvas(rng, phase: int, h: int, w: int, base: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """Phase-specific tissue texture, uint8 [h, w, 3], mean colour ~ `base` for every phase."""
    scale, angle, freq, amp, speck = _TEXTURE[phase]
    hh = h / 1.3  # the canvas is larger than a frame; scales refer to the frame height
    lum = _smooth_noise(rng, h, w, scale * hh)
    if amp > 0:
        th = np.deg2rad(angle + rng.uniform(-8, 8))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        warp = 6.0 * _smooth_noise(rng, h, w, 0.3 * hh)
        lum += amp * 3 * np.sin(2 * np.pi * freq / hh * (xx * np.cos(th) + yy * np.sin(th)) + warp)
    if speck > 0:
        spots = (rng.random((h, w)) < speck).astype(np.float32)
        k = np.ones(3, np.float32)
        spots = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, spots)
        spots = np.apply_along_axis(lambda c: np.convolve(c, k, "same"), 0, spots)
        lum += 2.5 * (np.clip(spots, 0, 1) - np.clip(spots, 0, 1).mean())
    lum = (lum - lum.mean()) / (lum.std() + 1e-6)
    hue = _smooth_noise(rng, h, w, 0.4 * hh)
    img = base[None, None, :] + 22.0 * lum[..., None] * np.array([1.0, 0.7, 0.6], np.float32) \
        + 12.0 * hue[..., None] * tint[None, None, :]
    return np.clip(img, 0, 255).astype(np.uint8)


def _seg_dist(yy, xx, p0, p1):
    """Distance of each pixel to the segment p0-p1 and the position t in [0, 1] along it."""
    d = np.asarray(p1, np.float32) - np.asarray(p0, np.float32)
    t = ((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(float(d @ d), 1e-6)
    t = np.clip(t, 0, 1)
    return np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1])), t


# Entry border point (fraction of W, H) and tip position per tool; tip colour accent.
_TOOL_POSE = {
    "Grasper": ((1.05, 0.15), (0.62, 0.45), (200, 200, 60)),
    "Bipolar": ((-0.05, 0.20), (0.38, 0.50), (40, 90, 230)),
    "Hook": ((1.05, 0.90), (0.55, 0.55), (230, 230, 230)),
    "Scissors": ((-0.05, 0.85), (0.42, 0.55), (240, 150, 30)),
    "Clipper": ((0.70, 1.05), (0.50, 0.48), (60, 220, 120)),
    "Irrigator": ((0.25, -0.05), (0.45, 0.42), (230, 60, 200)),
    "SpecimenBag": ((0.90, 1.05), (0.60, 0.62), (235, 235, 210)),
}


def _sprite(rng, tool: str, h: int, w: int, m: int):
    """Instrument sprite drawn on a frame padded by m pixels (so a wobble never shows its cut end):
    pixel rows, columns (frame coordinates, may be outside the frame) and colours uint8 [n, 3]."""
    (ex, ey), (tx, ty), accent = _TOOL_POSE[tool]
    j = rng.uniform(-0.04, 0.04, 2)
    p0 = np.array([ex * w + m, ey * h + m], np.float32)
    p1 = np.array([(tx + j[0]) * w + m, (ty + j[1]) * h + m], np.float32)
    yy, xx = np.mgrid[0:h + 2 * m, 0:w + 2 * m].astype(np.float32)
    s = h / 180.0
    d, t = _seg_dist(yy, xx, p0, p1)
    thick = (9 if tool in ("Irrigator",) else 6 if tool != "SpecimenBag" else 4) * s
    shaft = d < thick
    shade = 1.0 - 0.6 * (d / thick) ** 2
    rgb = np.zeros(yy.shape + (3,), np.float32)
    rgb[:] = (120.0 + 60 * shade)[..., None] * np.array([1.0, 1.0, 1.05], np.float32)
    axis = (p1 - p0) / (np.linalg.norm(p1 - p0) + 1e-6)
    normal = np.array([-axis[1], axis[0]], np.float32)
    tip = np.zeros(yy.shape, bool)
    if tool == "Grasper":  # two jaws in a V
        for sgn in (-1, 1):
            q = p1 + 14 * s * (axis * 0.9 + sgn * normal * 0.5)
            tip |= _seg_dist(yy, xx, p1, q)[0] < 3 * s
    elif tool == "Bipolar":  # two parallel prongs
        for sgn in (-1, 1):
            a = p1 + sgn * normal * 4 * s
            tip |= _seg_dist(yy, xx, a, a + axis * 14 * s)[0] < 2.2 * s
    elif tool == "Hook":  # an L-shaped hook
        q = p1 + axis * 10 * s
        tip |= _seg_dist(yy, xx, p1, q)[0] < 2.2 * s
        tip |= _seg_dist(yy, xx, q, q + normal * 8 * s)[0] < 2.2 * s
    elif tool == "Scissors":  # crossed blades
        for sgn in (-1, 1):
            tip |= _seg_dist(yy, xx, p1 - sgn * normal * 6 * s, p1 + axis * 16 * s + sgn * normal * 6 * s)[0] < 2.0 * s
    elif tool == "Clipper":  # a clip applier head: a block with a clip
        tip |= (np.abs((xx - p1[0]) * axis[0] + (yy - p1[1]) * axis[1] - 6 * s) < 7 * s) & \
               (np.abs((xx - p1[0]) * normal[0] + (yy - p1[1]) * normal[1]) < 6 * s)
    elif tool == "Irrigator":  # a ring at the tip of a thick tube
        r = np.hypot(xx - p1[0], yy - p1[1])
        tip |= (r > 5 * s) & (r < 10 * s)
    elif tool == "SpecimenBag":  # a large translucent-looking bag
        c = p1 + axis * 20 * s
        r = np.hypot((xx - c[0]) / 1.3, yy - c[1])
        tip |= r < 26 * s
    rgb[tip] = np.asarray(accent, np.float32)
    mask = shaft | tip
    ys, xs = np.nonzero(mask)
    return ys - m, xs - m, np.clip(rgb[ys, xs], 0, 255).astype(np.uint8)


def _shadow_maps(h: int, w: int):
    """Per announced tool: (flat pixel indices sorted by distance, sorted distances) from the
    region where the tool will enter (where its shadow grows)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for name in ANNOUNCED:
        (ex, ey), (tx, ty), _ = _TOOL_POSE[name]
        cx, cy = (0.6 * ex + 0.4 * tx) * w, (0.6 * ey + 0.4 * ty) * h
        d = np.hypot(xx - cx, yy - cy).ravel()
        order = np.argsort(d, kind="stable")
        out.append((order, d[order]))
    return out


def render_video(path: Path, plan: Plan, rng: np.random.Generator, width: int, height: int) -> None:
    """Render and encode one video (h264 yuv420p 25 fps, one x264 thread for determinism)."""
    import av

    H, W = height, width
    pad = int(0.15 * H)
    ch, cw = H + 2 * pad, W + 2 * pad
    base = np.array([rng.uniform(140, 210), rng.uniform(55, 110), rng.uniform(50, 100)], np.float32)
    tint = rng.normal(0, 1, 3).astype(np.float32)
    canvases = {}
    for p in sorted(set(plan.phase.tolist())):
        # a few noisy versions of each canvas, alternated per frame: cheap temporal noise
        c = _canvas(rng, p, ch, cw, base, tint).astype(np.int16)
        canvases[p] = [np.clip(c + rng.normal(0, 4.0, (ch, cw, 1)), 0, 255).astype(np.uint8)
                       for _ in range(3)]
    M = 6  # sprite padding = maximal wobble
    sprites = {t: _sprite(rng, t, H, W, M) for t in CHOLEC80_TOOLS}
    shadows = _shadow_maps(H, W)
    n = plan.frames
    tt = np.arange(n, dtype=np.float32) / FPS
    # camera drift (smooth)
    f1, f2 = rng.uniform(0.03, 0.08, 2)
    ox = (pad * (0.9 * np.sin(2 * np.pi * f1 * tt + rng.uniform(0, 6)))).astype(int) + pad
    oy = (pad * (0.9 * np.sin(2 * np.pi * f2 * tt + rng.uniform(0, 6)))).astype(int) + pad
    wob = rng.uniform(0.1, 0.4, len(CHOLEC80_TOOLS))
    max_r = 0.28 * H

    tmp_ctx = atomic_path(path)
    tmp = tmp_ctx.__enter__()
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "23", "threads": "1"}
            frame_buf = np.empty((H, W, 3), np.uint8)
            fade = FPS * 2  # cross-fade between phase textures over 2 s
            boundaries = np.nonzero(np.diff(plan.phase))[0] + 1
            prev_phase_at = {int(b): int(plan.phase[b - 1]) for b in boundaries}
            last_b = None
            for f in range(n):
                p = int(plan.phase[f])
                if f in prev_phase_at:
                    last_b = f
                y, x = oy[f], ox[f]
                v = f % len(canvases[p])  # noisy canvas version: temporal sensor noise
                if last_b is not None and f - last_b < fade:
                    a = (256 * (f - last_b)) // fade  # integer blend: cheap
                    old = canvases[prev_phase_at[last_b]][v][y:y + H, x:x + W].astype(np.uint16)
                    new = canvases[p][v][y:y + H, x:x + W].astype(np.uint16)
                    frame_buf[:] = (new * a + old * (256 - a)) >> 8
                else:
                    np.copyto(frame_buf, canvases[p][v][y:y + H, x:x + W])
                flat = frame_buf.reshape(-1, 3)
                for j in range(len(ANNOUNCED)):
                    s = plan.precursor[f, j]
                    if s > 0:  # darken the disc of radius s * max_r (pixels sorted by distance)
                        order, dist = shadows[j]
                        idx = order[:np.searchsorted(dist, s * max_r)]
                        flat[idx] = flat[idx] >> 1
                row = plan.tools[f // FPS]
                for k, name in enumerate(CHOLEC80_TOOLS):
                    if not row[k]:
                        continue
                    ys, xs, rgb = sprites[name]
                    # small wobble of the instrument
                    fy = ys + int(round(4 * np.sin(wob[k] * 2 * np.pi * f / FPS)))
                    fx = xs + int(round(5 * np.cos(wob[k] * 1.3 * 2 * np.pi * f / FPS)))
                    ok = (fy >= 0) & (fy < H) & (fx >= 0) & (fx < W)
                    flat[fy[ok] * W + fx[ok]] = rgb[ok]
                vf = av.VideoFrame.from_ndarray(frame_buf, format="rgb24")
                vf.pts = f
                vf.time_base = Fraction(1, FPS)
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        tmp_ctx.__exit__(None, None, None)
    except BaseException as e:
        tmp_ctx.__exit__(type(e), e, e.__traceback__)
        raise
