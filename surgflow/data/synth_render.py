"""Rendering of the synthetic surgeries (data/synth.py plans the labels): phase-specific tissue
canvases, metallic instrument sprites, precursor shadows, the label-independent variation of a
SynthProfile (light, camera, smoke, highlights, instrument looks), and h264 encoding with PyAV.

`render_frames` yields the frames (uint8 [H, W, 3]); `render_video` encodes them. A clean profile
runs exactly the arithmetic of before profiles existed (same frames for the same seed); every
variation is drawn from the variation stream `vrng`, as a function of the video and of time only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from surgflow.io_utils import atomic_path
from surgflow.labels import CHOLEC80_TOOLS

# -- definitions shared with data/synth.py (which imports them from here: one import direction)
FPS = 25
ANNOUNCED = ["Clipper", "Scissors", "Irrigator", "SpecimenBag"]  # tools with a visual precursor

# Relative phase durations (Cholec80 proportions flattened so short videos still see every phase).
PHASE_WEIGHT = np.array([1.0, 3.0, 1.6, 3.0, 1.2, 1.4, 1.0])


@dataclass(frozen=True)
class SynthProfile:
    """Every label-independent variation of a synthetic dataset, in one place. Amplitudes are 0 for
    "off"; each is drawn per video (and per frame where it varies in time) from the variation
    stream, never from the labels. Units: log-gains are natural-log standard deviations."""

    name: str
    # --- labels: durations, tools, transitions
    phase_weight: tuple = tuple(PHASE_WEIGHT.tolist())  # relative mean phase durations
    duration_sigma: float = 0.3  # log-normal spread of each phase's duration per video
    min_phase_seconds: float = 4.0  # every phase lasts at least this long (short videos: less)
    off_phase_tools: float = 0.0  # per video and tool: probability of uses outside its phase
    fade_seconds: tuple = (2.0, 2.0)  # texture cross-fade length per transition (uniform range)
    fade_lead: float = 0.0  # fraction of the cross-fade before the label changes (0 = clean cut)
    # --- camera and light (per video, slow drift in time)
    exposure: float = 0.0  # log-gain std of the overall brightness per video
    white_balance: float = 0.0  # log-gain std of each channel per video
    drift: float = 0.0  # amplitude of the slow brightness/colour drift (fraction)
    vignetting: float = 0.0  # darkening at the corners (fraction, per video in [0.5, 1] x this)
    pan: float = 0.0  # extra camera wandering (fraction of the canvas margin)
    zoom: float = 0.0  # zoom-in amplitude (fraction of the frame)
    motion_blur: float = 0.0  # blur episodes per minute (length up to 3 % of the width)
    smoke: float = 0.0  # smoke episodes per minute
    specular: float = 0.0  # mean number of specular highlights on the tissue
    # --- tissue and instruments
    texture: float = 0.0  # per video and phase jitter of the texture parameters
    tool_colour: float = 0.0  # instrument looks: shaft brightness (x1.5) and tint, tip colour (x255)
    tool_size: float = 0.0  # log-std of instrument thickness per video
    tool_pose: float = 0.0  # instrument entry/tip jitter per video (fraction of the frame)

    @property
    def is_clean(self) -> bool:
        return self == dataclasses.replace(CLEAN, name=self.name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CLEAN = SynthProfile("clean")


@dataclass
class Plan:
    """Per-video labels: phase per 25-fps frame, tools per second, precursor strength per frame."""

    frames: int
    phase: np.ndarray  # int64 [frames]
    tools: np.ndarray  # bool [rows, 7], row r covers frames 25r..25r+24
    precursor: np.ndarray  # float32 [frames, len(ANNOUNCED)] in [0, 1]


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


def _canvas(rng, phase: int, h: int, w: int, base: np.ndarray, tint: np.ndarray,
            jitter: np.ndarray | None = None) -> np.ndarray:
    """Phase-specific tissue texture, uint8 [h, w, 3], mean colour ~ `base` for every phase.
    jitter [5]: per-video (scale, angle deg, frequency, amplitude, speckle) changes (None: none)."""
    scale, angle, freq, amp, speck = _TEXTURE[phase]
    if jitter is not None:
        scale, angle, freq = scale * jitter[0], angle + jitter[1], freq * jitter[2]
        amp, speck = amp * jitter[3], speck * jitter[4]
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


def _sprite(rng, tool: str, h: int, w: int, m: int, look: dict | None = None):
    """Instrument sprite drawn on a frame padded by m pixels (so a wobble never shows its cut end):
    pixel rows, columns (frame coordinates, may be outside the frame) and colours uint8 [n, 3].
    look: per-video appearance {"pose": [4] (entry x, y, tip x, y offsets, fraction of the frame),
    "size": thickness factor, "shaft": [3] colour factors, "accent": [3] tip colour offsets}."""
    (ex, ey), (tx, ty), accent = _TOOL_POSE[tool]
    j = rng.uniform(-0.04, 0.04, 2)
    if look is not None:
        ex, ey, tx, ty = np.array([ex, ey, tx, ty]) + look["pose"]
        accent = np.clip(np.asarray(accent, np.float32) + look["accent"], 0, 255)
    p0 = np.array([ex * w + m, ey * h + m], np.float32)
    p1 = np.array([(tx + j[0]) * w + m, (ty + j[1]) * h + m], np.float32)
    yy, xx = np.mgrid[0:h + 2 * m, 0:w + 2 * m].astype(np.float32)
    s = h / 180.0 if look is None else h / 180.0 * look["size"]
    d, t = _seg_dist(yy, xx, p0, p1)
    thick = (9 if tool in ("Irrigator",) else 6 if tool != "SpecimenBag" else 4) * s
    shaft = d < thick
    shade = 1.0 - 0.6 * (d / thick) ** 2
    rgb = np.zeros(yy.shape + (3,), np.float32)
    rgb[:] = (120.0 + 60 * shade)[..., None] * np.array([1.0, 1.0, 1.05], np.float32)
    if look is not None:
        rgb *= look["shaft"]
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


# --------------------------------------------------------------------------------------------
# label-independent variation (SynthProfile): drawn per video from vrng, functions of time only
# --------------------------------------------------------------------------------------------
def _slow_wave(vrng, n: int, lo_hz: float, hi_hz: float, k: int = 3) -> np.ndarray:
    """Smooth random signal over n frames, a sum of k sinusoids, in about [-1, 1]: float32 [n]."""
    t = np.arange(n, dtype=np.float64) / FPS
    f, ph = vrng.uniform(lo_hz, hi_hz, k), vrng.uniform(0, 2 * np.pi, k)
    return (np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None]).sum(0) / np.sqrt(k)).astype(np.float32)


def _episodes(vrng, n: int, per_minute: float, seconds: tuple[float, float]) -> list[tuple[int, int]]:
    """Random (start, length) frame spans, a Poisson number per video, uniform over time."""
    k = int(vrng.poisson(per_minute * n / FPS / 60.0)) if per_minute > 0 else 0
    return [(int(vrng.integers(0, max(n, 1))), max(1, int(vrng.uniform(*seconds) * FPS))) for _ in range(k)]


def transitions(phase: np.ndarray, profile: SynthProfile, vrng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-fade schedule per frame: (from_phase, to_phase, alpha) with frame = to * alpha/256 +
    from * (1 - alpha/256); alpha 256 = no blend. A fade of the profile's length starts
    `fade_lead` of its length before the label changes (clean: at the boundary, 2 s)."""
    n = len(phase)
    src, dst, alpha = phase.copy(), phase.copy(), np.full(n, 256, np.int64)
    lo, hi = profile.fade_seconds
    for b in (np.nonzero(np.diff(phase))[0] + 1).tolist():
        d = FPS * 2 if (lo, hi) == (2.0, 2.0) else max(1, int(round(vrng.uniform(lo, hi) * FPS)))
        start = b - int(round(profile.fade_lead * d))
        f = np.arange(max(start, 0), min(start + d, n))
        src[f], dst[f], alpha[f] = phase[b - 1], phase[b], (256 * (f - start)) // d
    return src, dst, alpha


def _look(profile: SynthProfile, vrng, n: int, H: int, W: int, pad: int) -> dict:
    """Per-frame camera/light variation of one video (never reads the labels)."""
    P = profile
    def minutes_wave():  # periods of 20 s to 2 min
        return _slow_wave(vrng, n, 1 / 120, 1 / 20)

    log_gain = (vrng.normal(0, P.exposure) + vrng.normal(0, P.white_balance, 3)).astype(np.float32)
    drift = P.drift * (minutes_wave()[:, None] + 0.3 * np.stack([minutes_wave() for _ in range(3)], 1))
    gain = np.exp(log_gain[None] + drift).astype(np.float32)  # [n, 3]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cy, cx = vrng.normal(0, 0.1, 2)
    r2 = (((xx + 0.5) / W - 0.5 - cx) ** 2 + ((yy + 0.5) / H - 0.5 - cy) ** 2) * 2  # corners ~1
    vig = np.clip(1 - P.vignetting * vrng.uniform(0.5, 1.0) * r2, 0.05, 1)
    vig = np.repeat(vig[..., None], 3, axis=2)  # [H, W, 3]: a size-1 broadcast axis is slow here
    pan = np.stack([minutes_wave() + 0.4 * _slow_wave(vrng, n, 0.1, 0.4) for _ in range(2)], 1)
    pan = (P.pan * pad * 0.8 * pan).astype(np.float32)  # [n, 2] extra (x, y) offset in pixels
    zoom = 1 + P.zoom * (0.5 + 0.5 * _slow_wave(vrng, n, 1 / 90, 1 / 30))  # >= 1: zoom in only
    smoke = np.zeros(n, np.float32)
    for s0, d in _episodes(vrng, n, P.smoke, (3.0, 12.0)):
        t = np.arange(n - s0, dtype=np.float32) / FPS
        peak = vrng.uniform(0.3, 0.75)
        env = np.minimum(t / 1.0, 1.0) * np.exp(-np.maximum(t - d / FPS, 0) / 2.0)  # rise, hold, fade
        smoke[s0:] = np.maximum(smoke[s0:], peak * env)
    smoke_maps = [np.repeat(np.clip(0.55 + 0.3 * _smooth_noise(vrng, H, W, 0.35 * H), 0, 1)[..., None],
                            3, axis=2) for _ in range(2)]  # [H, W, 3] each
    blur = np.zeros((n, 2), np.int64)  # (length in pixels, axis)
    for s0, d in _episodes(vrng, n, P.motion_blur, (0.3, 1.5)):
        blur[s0:s0 + d] = (max(2, int(round(vrng.uniform(0.01, 0.03) * W))), int(vrng.integers(0, 2)))
    return {"gain": gain, "vig": vig, "pan": pan, "zoom": zoom.astype(np.float32), "smoke": smoke,
            "smoke_maps": smoke_maps, "blur": blur}


def _speculars(vrng, mean: float, h: int, w: int) -> np.ndarray:
    """Specular highlights on the tissue canvas: float32 [h, w, 1] in [0, 1] (moves with it)."""
    out = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(vrng.poisson(mean))):
        cy, cx = vrng.uniform(0, h), vrng.uniform(0, w)
        ry, rx = vrng.uniform(0.6, 2.0, 2) * h / 90
        out = np.maximum(out, np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)))
    return out[..., None]


def _box_blur(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Box blur of length k along axis 0 (rows) or 1 (columns) of float [H, W, 3] (motion blur)."""
    left = k // 2
    widths = [(0, 0)] * 3
    widths[axis] = (left + 1, k - 1 - left)
    cs = np.cumsum(np.pad(x, widths, mode="edge"), axis=axis)
    a, b = [slice(None)] * 3, [slice(None)] * 3
    a[axis], b[axis] = slice(k, None), slice(None, -k)
    return (cs[tuple(a)] - cs[tuple(b)]) / k


def render_frames(plan: Plan, rng: np.random.Generator, width: int, height: int,
                  profile: SynthProfile = CLEAN, vrng: np.random.Generator | None = None):
    """The frames of one video in order: uint8 [H, W, 3] (the same buffer, refilled per frame)."""
    P = profile
    clean = P.is_clean
    if not clean and vrng is None:
        raise ValueError("render_frames: a profile with variation needs its generator vrng")
    H, W = height, width
    pad = int(0.15 * H)
    ch, cw = H + 2 * pad, W + 2 * pad
    base = np.array([rng.uniform(140, 210), rng.uniform(55, 110), rng.uniform(50, 100)], np.float32)
    tint = rng.normal(0, 1, 3).astype(np.float32)
    phases = sorted(set(plan.phase.tolist()))
    jit = {p: None for p in phases}
    if P.texture > 0:  # per video and phase: the phase keeps its kind of texture, not its numbers
        jit = {p: np.array([np.exp(vrng.normal(0, 0.3 * P.texture)), vrng.normal(0, 20 * P.texture),
                            np.exp(vrng.normal(0, 0.3 * P.texture)), np.exp(vrng.normal(0, 0.3 * P.texture)),
                            np.exp(vrng.normal(0, 0.5 * P.texture))]) for p in phases}
    spec = _speculars(vrng, P.specular, ch, cw) if P.specular > 0 else None
    canvases = {}
    for p in phases:
        # a few noisy versions of each canvas, alternated per frame: cheap temporal noise
        c = _canvas(rng, p, ch, cw, base, tint, jit[p]).astype(np.int16)
        versions = [np.clip(c + rng.normal(0, 4.0, (ch, cw, 1)), 0, 255).astype(np.uint8) for _ in range(3)]
        if spec is not None:  # the same highlights on every phase's tissue
            versions = [(v + (255.0 - v) * spec).astype(np.uint8) for v in versions]
        canvases[p] = versions
    M = 6  # sprite padding = maximal wobble
    looks = {t: None for t in CHOLEC80_TOOLS}
    if P.tool_colour > 0 or P.tool_size > 0 or P.tool_pose > 0:
        looks = {t: {"pose": vrng.normal(0, P.tool_pose, 4) if P.tool_pose > 0 else np.zeros(4),
                     "size": float(np.exp(vrng.normal(0, P.tool_size))),
                     # metal: mostly brighter or darker, a little tinted
                     "shaft": ((1 + vrng.normal(0, 1.5 * P.tool_colour))
                               * (1 + vrng.normal(0, P.tool_colour / 3, 3))).clip(0.3, 1.6).astype(np.float32),
                     "accent": vrng.normal(0, 255 * P.tool_colour, 3).astype(np.float32)}
                 for t in CHOLEC80_TOOLS}
    sprites = {t: _sprite(rng, t, H, W, M, looks[t]) for t in CHOLEC80_TOOLS}
    shadows = _shadow_maps(H, W)
    n = plan.frames
    tt = np.arange(n, dtype=np.float32) / FPS
    # camera drift (smooth)
    f1, f2 = rng.uniform(0.03, 0.08, 2)
    ox = (pad * (0.9 * np.sin(2 * np.pi * f1 * tt + rng.uniform(0, 6)))).astype(int) + pad
    oy = (pad * (0.9 * np.sin(2 * np.pi * f2 * tt + rng.uniform(0, 6)))).astype(int) + pad
    wob = rng.uniform(0.1, 0.4, len(CHOLEC80_TOOLS))
    max_r = 0.28 * H
    src, dst, alpha = transitions(plan.phase, P, vrng)
    lk = None
    if not clean:
        lk = _look(P, vrng, n, H, W, pad)
        ox = np.clip(ox + lk["pan"][:, 0].astype(int), 0, 2 * pad)
        oy = np.clip(oy + lk["pan"][:, 1].astype(int), 0, 2 * pad)
        zoomed = bool((lk["zoom"] > 1.0).any())
        ar_h, ar_w = np.arange(H, dtype=np.float32) - H / 2 + 0.5, np.arange(W, dtype=np.float32) - W / 2 + 0.5
    frame_buf = np.empty((H, W, 3), np.uint8)
    for f in range(n):
        y, x = oy[f], ox[f]
        v = f % 3  # noisy canvas version: temporal sensor noise
        if lk is not None and zoomed:  # a zoomed-in window around the panned centre
            z = lk["zoom"][f]
            rows = np.clip(np.round(y + H / 2 - 0.5 + ar_h / z), 0, ch - 1).astype(np.intp)
            cols = np.clip(np.round(x + W / 2 - 0.5 + ar_w / z), 0, cw - 1).astype(np.intp)

            def crop(c):  # take() per axis: 3x faster than one 2-d fancy index
                return c.take(rows, 0).take(cols, 1)
        else:
            def crop(c):
                return c[y:y + H, x:x + W]
        if alpha[f] < 256:
            a = int(alpha[f])  # integer blend: cheap
            old = crop(canvases[int(src[f])][v]).astype(np.uint16)
            new = crop(canvases[int(dst[f])][v]).astype(np.uint16)
            frame_buf[:] = (new * a + old * (256 - a)) >> 8
        else:
            np.copyto(frame_buf, crop(canvases[int(dst[f])][v]))
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
        if lk is not None:  # the scene's smoke, then the camera: blur, light, vignetting
            img = frame_buf.astype(np.float32)
            a = lk["smoke"][f]
            if a > 0.01:  # haze towards light grey, its pattern slowly changing
                w = float(0.5 + 0.5 * np.sin(2 * np.pi * f / (8 * FPS)))
                m = (a * w) * lk["smoke_maps"][0] + (a * (1 - w)) * lk["smoke_maps"][1]
                img += m * (215.0 - img)
            k, axis = lk["blur"][f]
            if k >= 2:
                img = _box_blur(img, int(k), int(axis))
            img *= lk["vig"]
            img *= lk["gain"][f]
            np.clip(img, 0, 255, out=img)
            np.copyto(frame_buf, img, casting="unsafe")
        yield frame_buf


def render_video(path: Path, plan: Plan, rng: np.random.Generator, width: int, height: int,
                 profile: SynthProfile = CLEAN, vrng: np.random.Generator | None = None) -> None:
    """Render and encode one video (h264 yuv420p 25 fps, one x264 thread for determinism)."""
    import av  # heavy: av; `surgflow --help` imports this module

    tmp_ctx = atomic_path(path)
    tmp = tmp_ctx.__enter__()
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "23", "threads": "1"}
            for f, frame in enumerate(render_frames(plan, rng, width, height, profile, vrng)):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
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
