"""Clip-consistent augmentation on tensors, on whatever device the batch lives on.

The paper's code augments every frame independently (docs/DOMAIN.md section 3), which makes consecutive
frames jitter against each other. `ClipAugment` draws ONE set of random parameters per sequence and
applies it to all T frames of that sequence, while the B sequences of a batch get different ones.
Everything is vectorised over the batch: one `grid_sample` for all geometric transforms (shift,
scale, rotation, crop-and-resize and flip folded into one affine matrix per sequence) and broadcast
arithmetic for the colour transforms; no Python loop over frames or sequences.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

# Columns of the uniform random draws per sequence; a fixed count keeps a generator's stream (and so
# the parameters) independent of which transforms are switched on.
_AFFINE, _DX, _DY, _SCALE, _ANGLE, _CROP, _CSIZE, _CX, _CY, _FLIP = range(10)
_COLOR, _BRIGHT, _CONTRAST, _SAT, _RGB, _R, _G, _B = range(10, 18)
_NUM_DRAWS = 18
_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision's rgb_to_grayscale


class ClipAugment:
    """Random geometric + colour augmentation with identical parameters for all frames of a clip.

    Defaults follow the paper's augmentation (shift 0.05, scale 0.05, rotation 15 deg at p 0.5,
    random crop of about 216/256 of the frame resized back, RGB shift 15/255, brightness/contrast),
    made clip-consistent. Contrast blends each frame towards its OWN mean grey level (torchvision's
    formula per frame): a mean over the clip would let frame t's pixels depend on frames after t
    (and on a lane's padding), the same pooled-over-time leak as BatchNorm.

    Call: `aug(frames, generator=None)` with frames float [B, T, 3, H, W] in [0, 1] on any device ->
    float [B, T, 3, H, W] in [0, 1] on the same device. Random numbers come from `generator` (a CPU
    `torch.Generator`; default: the global torch RNG), so a seeded generator gives identical output.
    """

    def __init__(self, shift: float = 0.05, scale: float = 0.05, rotate: float = 15.0,
                 p_affine: float = 0.5, crop_scale: tuple[float, float] = (0.84, 1.0),
                 p_crop: float = 0.5, p_flip: float = 0.0, brightness: float = 0.2,
                 contrast: float = 0.2, saturation: float = 0.0, p_color: float = 0.5,
                 rgb_shift: float = 15 / 255, p_rgb_shift: float = 0.5,
                 padding_mode: str = "reflection"):
        for name, p in (("p_affine", p_affine), ("p_crop", p_crop), ("p_flip", p_flip),
                        ("p_color", p_color), ("p_rgb_shift", p_rgb_shift)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"ClipAugment {name} must be in [0, 1], got {p}")
        if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(f"ClipAugment crop_scale must satisfy 0 < lo <= hi <= 1, got {crop_scale}")
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"ClipAugment padding_mode must be zeros|border|reflection, got {padding_mode}")
        self.shift, self.scale, self.rotate, self.p_affine = shift, scale, rotate, p_affine
        self.crop_scale, self.p_crop, self.p_flip = tuple(crop_scale), p_crop, p_flip
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.p_color, self.rgb_shift, self.p_rgb_shift = p_color, rgb_shift, p_rgb_shift
        self.padding_mode = padding_mode

    def __repr__(self) -> str:
        keys = ("shift", "scale", "rotate", "p_affine", "crop_scale", "p_crop", "p_flip",
                "brightness", "contrast", "saturation", "p_color", "rgb_shift", "p_rgb_shift")
        return f"ClipAugment({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"

    # ---------------------------------------------------------------- parameters (CPU, per sequence)
    def sample_params(self, batch_size: int, generator: Optional[torch.Generator] = None) -> dict:
        """One parameter set per sequence: a dict of CPU tensors with leading dim B."""
        u = torch.rand(batch_size, _NUM_DRAWS, generator=generator, dtype=torch.float64)

        def sym(col, limit):  # uniform in [-limit, limit]
            return (2 * u[:, col] - 1) * limit

        affine = u[:, _AFFINE] < self.p_affine
        crop = u[:, _CROP] < self.p_crop
        color = u[:, _COLOR] < self.p_color
        rgb = u[:, _RGB] < self.p_rgb_shift
        one = torch.ones(batch_size, dtype=torch.float64)
        lo, hi = self.crop_scale
        return {
            "geometric": affine | crop | (u[:, _FLIP] < self.p_flip),  # bool [B]: needs resampling
            "shift": torch.stack([sym(_DX, self.shift), sym(_DY, self.shift)], 1) * affine[:, None],
            "scale": torch.where(affine, 1 + sym(_SCALE, self.scale), one),
            "angle": sym(_ANGLE, self.rotate) * affine,  # degrees, counter-clockwise (as torchvision)
            "crop": torch.where(crop, lo + (hi - lo) * u[:, _CSIZE], one),  # side fraction kept
            "crop_center": torch.stack([2 * u[:, _CX] - 1, 2 * u[:, _CY] - 1], 1) * crop[:, None],
            "flip": u[:, _FLIP] < self.p_flip,
            "brightness": torch.where(color, 1 + sym(_BRIGHT, self.brightness), one),
            "contrast": torch.where(color, 1 + sym(_CONTRAST, self.contrast), one),
            "saturation": torch.where(color, 1 + sym(_SAT, self.saturation), one),
            "rgb_shift": torch.stack([sym(c, self.rgb_shift) for c in (_R, _G, _B)], 1) * rgb[:, None],
        }

    @staticmethod
    def affine_theta(params: dict, height: int, width: int) -> Tensor:
        """Per-sequence 2x3 matrices mapping output to input coordinates for `F.affine_grid`.

        In pixel coordinates centred on the image, an output pixel q comes from input pixel
            p = (1/s) R(-a) (c F q + o - t)
        (F: flip, c/o: crop size/offset, t: shift, s: scale, a: angle, R in y-up axes), i.e. the
        content is first shifted-scaled-rotated, then cropped and resized back, as in the paper. The
        matrix is then expressed in grid_sample's normalised coordinates ([-1, 1] across the frame).
        """
        B = params["scale"].shape[0]
        size = torch.tensor([width, height], dtype=torch.float64)  # (x, y)
        a = -torch.deg2rad(params["angle"])  # y points down: positive = counter-clockwise on screen
        cos, sin = torch.cos(a), torch.sin(a)
        rot_inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-a)
        flip = torch.ones(B, 2, dtype=torch.float64)
        flip[:, 0] = torch.where(params["flip"], -1.0, 1.0)
        c, s = params["crop"], params["scale"]
        offset = params["crop_center"] * (1 - c[:, None]) * size / 2  # crop centre, pixels [B, 2]
        t = params["shift"] * size  # pixels [B, 2]
        M = rot_inv * (c / s)[:, None, None] * flip[:, None, :]  # [B, 2, 2]
        m = torch.einsum("bij,bj->bi", rot_inv, offset - t) / s[:, None]  # [B, 2]
        half = size / 2  # normalised = pixel / half
        theta_A = M * half[None, None, :] / half[None, :, None]  # D^-1 M D
        theta_b = m / half
        return torch.cat([theta_A, theta_b[:, :, None]], 2)  # [B, 2, 3]

    # ------------------------------------------------------------------------------ application
    def __call__(self, frames: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        if frames.dim() != 5 or frames.shape[2] != 3 or not frames.is_floating_point():
            raise ValueError(f"ClipAugment expects float frames [B, T, 3, H, W], got "
                             f"{tuple(frames.shape)} {frames.dtype}")
        return self.apply(frames, self.sample_params(frames.shape[0], generator))

    @staticmethod
    def color_matrix(params: dict, frame_gray_mean: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Brightness, contrast, saturation and RGB shift folded into one affine colour map per
        frame, x -> M x + c with M [B, 3, 3] (per sequence), c [B, T, 3] (per frame; T = 1 without
        contrast), on the device/dtype of the parameters.

        brightness: x * fb; contrast: fc * x + (1 - fc) * mean grey of the frame; saturation:
        fs * x + (1 - fs) * grey(x); RGB shift: + (dr, dg, db). torchvision's formulas, except that
        the intermediate clamps are dropped (they would break the composition into one map).
        `frame_gray_mean` [B, T]: mean grey level of each frame (needed where contrast != 1).
        """
        fb, fc, fs = params["brightness"], params["contrast"], params["saturation"]
        B = fb.shape[0]
        w = torch.tensor(_GRAY, dtype=fb.dtype, device=fb.device)  # grey = w . rgb
        eye = torch.eye(3, dtype=fb.dtype, device=fb.device).expand(B, 3, 3)
        S = fs[:, None, None] * eye + (1 - fs)[:, None, None] * w.expand(B, 3, 3)  # saturation
        M = (fb * fc)[:, None, None] * S
        mean = torch.zeros_like(fb)[:, None] if frame_gray_mean is None else frame_gray_mean  # [B, T]
        grey_level = ((1 - fc) * fb)[:, None] * mean  # [B, T]: contrast adds this grey to each channel
        c = grey_level[..., None] * S.sum(-1)[:, None] + params["rgb_shift"][:, None]  # [B, T, 3]
        return M, c

    @staticmethod
    def contrast_reference(x: Tensor) -> Tensor:
        """Grey level contrast blends towards: each frame's own mean grey, [B, T, 3, H, W] -> [B, T].
        Never pool over T here: frame t would then depend on frames after t."""
        return x.mean(dim=(3, 4)) @ torch.tensor(_GRAY, device=x.device, dtype=x.dtype)

    def apply(self, frames: Tensor, params: dict) -> Tensor:
        """Apply given per-sequence parameters to frames float [B, T, 3, H, W]."""
        B, T, C, H, W = frames.shape
        dev, dt = frames.device, frames.dtype
        x = frames

        geo = params["geometric"]
        if bool(geo.any()):
            idx = torch.nonzero(geo).flatten()  # sequences that need resampling
            theta = self.affine_theta({k: v[idx] for k, v in params.items()}, H, W)
            n = len(idx)
            grid = F.affine_grid(theta.to(dev, dt), [n, 1, H, W], align_corners=False)  # [n,H,W,2]
            # Fold T into channels: one grid per sequence resamples all its T frames alike.
            sub = x.index_select(0, idx.to(dev)).reshape(n, T * C, H, W)
            sub = F.grid_sample(sub, grid, mode="bilinear", padding_mode=self.padding_mode,
                                align_corners=False).reshape(n, T, C, H, W)
            x = x.index_copy(0, idx.to(dev), sub) if n < B else sub

        color = ((params["brightness"] != 1) | (params["contrast"] != 1)
                 | (params["saturation"] != 1) | (params["rgb_shift"] != 0).any(1))
        if bool(color.any()):
            on_dev = {k: params[k].to(dev, dt) for k in ("brightness", "contrast", "saturation",
                                                         "rgb_shift")}
            mean = None
            if bool((params["contrast"] != 1).any()):
                mean = self.contrast_reference(x)  # [B, T]
            M, c = self.color_matrix(on_dev, mean)  # stays on the device: no host sync
            c = c.reshape(B, -1, 3, 1, 1)  # [B, T or 1, 3, 1, 1]
            if bool((params["saturation"] == 1).all()):  # M diagonal: one fused multiply-add
                x = torch.addcmul(c, x, M.diagonal(dim1=1, dim2=2).reshape(B, 1, 3, 1, 1))
            else:  # mixes channels: out_i = sum_j M_ij x_j
                x = torch.einsum("bij,btjhw->btihw", M, x) + c
        if x is frames:
            x = frames.clone()  # never hand back the caller's tensor
        return x.clamp_(0, 1)


class AppearanceAugment:
    """Per-video consistent, causal appearance augmentation: the variation of real laparoscopic
    video that a new dataset brings (data/synth.py's SynthProfile declares the same kinds).

    Per video: exposure and white balance gains, contrast, saturation, a hue rotation about the grey
    axis, vignetting (random centre), Gaussian blur, and an optional slow brightness drift over the
    video's frame index. `strength` scales every range (0: identity).

    Consistent: with `new_video` [B] (carry_hidden lanes) a lane keeps its parameters for all
    chunks of its video and draws new ones where a video starts; without it every call draws (one
    set per sequence, as ClipAugment). The generator always yields B draws per call, so the stream
    does not depend on which lanes start a video. After a resume mid-video, lanes that are mid-video
    draw once more (the parameters are not checkpointed; the generator is).
    Causal: every operation is per frame (contrast towards the frame's own mean grey; drift a
    function of the frame index `starts + t` only): no statistic over the time axis.

    Call: `aug(frames, generator=None, new_video=None, starts=None)`, frames float [B, T, 3, H, W]
    in [0, 1] -> the same shape, on the frames' device."""

    per_video = True  # strategies pass new_video and starts (training/strategies.py)

    def __init__(self, strength: float = 1.0, exposure: float = 0.3, white_balance: float = 0.12,
                 contrast: float = 0.2, saturation: float = 0.3, hue: float = 0.08,
                 vignetting: float = 0.45, p_vignetting: float = 0.5, blur: float = 1.2,
                 p_blur: float = 0.3, drift: float = 0.1, drift_frames: tuple[int, int] = (30, 300)):
        if strength < 0:
            raise ValueError(f"AppearanceAugment strength must be >= 0, got {strength}")
        k = float(strength)
        self.strength = k
        self.exposure, self.white_balance = exposure * k, white_balance * k  # log-gain half-ranges
        self.contrast, self.saturation, self.hue = contrast * k, saturation * k, hue * k
        self.vignetting, self.p_vignetting = min(vignetting * k, 0.9), p_vignetting
        self.blur, self.p_blur = blur * k, p_blur  # max Gaussian sigma in pixels
        self.drift, self.drift_frames = drift * k, drift_frames
        self._params: Optional[dict] = None  # the lanes' current parameters (CPU tensors [B, ...])

    def __repr__(self) -> str:
        return f"AppearanceAugment(strength={self.strength!r})"

    def sample_params(self, batch_size: int, generator: Optional[torch.Generator] = None) -> dict:
        u = torch.rand(batch_size, 16, generator=generator, dtype=torch.float64)

        def sym(col, limit):
            return (2 * u[:, col] - 1) * limit

        vig = u[:, 7] < self.p_vignetting
        blur = u[:, 10] < self.p_blur
        lo, hi = self.drift_frames
        return {
            "gain": torch.exp(sym(0, self.exposure)[:, None]
                              + torch.stack([sym(c, self.white_balance) for c in (1, 2, 3)], 1)),
            "contrast": 1 + sym(4, self.contrast),
            "saturation": 1 + sym(5, self.saturation),
            "hue": sym(6, self.hue),  # radians about the grey axis
            "vignetting": torch.where(vig, u[:, 8] * self.vignetting, torch.zeros_like(u[:, 8])),
            "vig_center": torch.stack([sym(9, 0.2), sym(11, 0.2)], 1),  # (x, y), fraction of size
            "sigma": torch.where(blur, u[:, 12] * self.blur, torch.zeros_like(u[:, 12])),
            "drift": u[:, 13] * self.drift,
            "drift_period": lo + (hi - lo) * u[:, 14],
            "drift_phase": 2 * torch.pi * u[:, 15],
        }

    def __call__(self, frames: Tensor, generator: Optional[torch.Generator] = None,
                 new_video: Optional[Tensor] = None, starts: Optional[Tensor] = None) -> Tensor:
        if frames.dim() != 5 or frames.shape[2] != 3 or not frames.is_floating_point():
            raise ValueError(f"AppearanceAugment expects float frames [B, T, 3, H, W], got "
                             f"{tuple(frames.shape)} {frames.dtype}")
        B = frames.shape[0]
        fresh = self.sample_params(B, generator)  # always B draws: a stream independent of lanes
        old = self._params
        if new_video is None or old is None or old["gain"].shape[0] != B or new_video.numel() != B:
            params = fresh
        else:
            nv = new_video.detach().to("cpu", torch.bool)
            params = {k: torch.where(nv.view(-1, *[1] * (v.dim() - 1)), v, old[k]) for k, v in fresh.items()}
        self._params = params if new_video is not None else None
        if starts is not None and starts.numel() != B:
            starts = None
        return self.apply(frames, params, starts)

    @staticmethod
    def _color_matrix(params: dict) -> Tensor:
        """Saturation and hue rotation about the grey axis, then the channel gains: [B, 3, 3]."""
        fs, th = params["saturation"], params["hue"]
        B = fs.shape[0]
        eye = torch.eye(3, dtype=fs.dtype).expand(B, 3, 3)
        w = torch.tensor(_GRAY, dtype=fs.dtype).expand(B, 3, 3)
        S = fs[:, None, None] * eye + (1 - fs)[:, None, None] * w
        n = torch.full((3,), 3 ** -0.5, dtype=fs.dtype)
        K = torch.tensor([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]], dtype=fs.dtype)
        c, s = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
        R = c * eye + s * K + (1 - c) * torch.outer(n, n)  # Rodrigues
        return params["gain"][:, :, None] * (R @ S)

    def apply(self, frames: Tensor, params: dict, starts: Optional[Tensor] = None) -> Tensor:
        """Apply per-sequence parameters to frames float [B, T, 3, H, W]; `starts` [B]: the index of
        each sequence's first frame in its video (for the drift; default 0)."""
        B, T, C, H, W = frames.shape
        dev, dt = frames.device, frames.dtype
        M = self._color_matrix(params)  # [B, 3, 3]
        fc = params["contrast"]
        # contrast towards each frame's own mean grey after the colour map: linear, so the grey is
        # w . M . (mean rgb of the input frame) and the whole colour step is one map A x + c
        A = (fc[:, None, None] * M).to(dev, dt)
        w = torch.tensor(_GRAY, dtype=dt, device=dev)
        grey = (frames.mean(dim=(3, 4)) @ M.to(dev, dt).transpose(1, 2)) @ w  # [B, T]: per frame
        c = ((1 - fc).to(dev, dt)[:, None] * grey)[..., None, None, None]  # [B, T, 1, 1, 1]
        x = (A[:, None] @ frames.reshape(B, T, C, H * W)).reshape(B, T, C, H, W) + c  # faster than einsum
        t0 = (starts.detach().to("cpu", torch.float64) if starts is not None
              else torch.zeros(B, dtype=torch.float64))
        t = t0[:, None] + torch.arange(T, dtype=torch.float64)[None]  # [B, T] frame index in the video
        drift = 1 + params["drift"][:, None] * torch.sin(2 * torch.pi * t / params["drift_period"][:, None]
                                                         + params["drift_phase"][:, None])
        yy = (torch.arange(H, dtype=torch.float64) + 0.5) / H - 0.5
        xx = (torch.arange(W, dtype=torch.float64) + 0.5) / W - 0.5
        cx, cy = params["vig_center"][:, 0], params["vig_center"][:, 1]
        r2 = 2 * ((xx[None, None, :] - cx[:, None, None]) ** 2 + (yy[None, :, None] - cy[:, None, None]) ** 2)
        vig = (1 - params["vignetting"][:, None, None] * r2).clamp(min=0.05)  # [B, H, W]
        x.mul_(drift.to(dev, dt)[:, :, None, None, None] * vig.to(dev, dt)[:, None, None])
        sig = params["sigma"]
        if bool((sig > 0).any()):  # separable Gaussian, radius 2, per sequence; spatial only
            r = torch.arange(-2, 3, dtype=torch.float64)
            k = torch.exp(-r[None] ** 2 / (2 * sig.clamp(min=1e-3)[:, None] ** 2))
            k = torch.where((sig > 0)[:, None], k, (r == 0).to(k.dtype)[None].expand_as(k))
            k = (k / k.sum(1, keepdim=True)).to(dev, dt)  # [B, 5]
            kk = k.repeat_interleave(T * C, 0)  # one kernel per (sequence, frame, channel)
            y = F.pad(x.reshape(1, B * T * C, H, W), (2, 2, 2, 2), mode="replicate")
            y = F.conv2d(y, kk[:, None, None, :], groups=B * T * C)
            y = F.conv2d(y, kk[:, None, :, None], groups=B * T * C)
            x = y.reshape(B, T, C, H, W)
        return x.clamp_(0, 1)


class VideoAugment:
    """ClipAugment (geometry and colour per sequence, optional) then AppearanceAugment (per video);
    what `build_augment` returns when data.augment_appearance > 0."""

    per_video = True

    def __init__(self, clip: Optional[ClipAugment], appearance: AppearanceAugment):
        self.clip, self.appearance = clip, appearance

    def __repr__(self) -> str:
        return f"VideoAugment({self.clip!r}, {self.appearance!r})"

    def __call__(self, frames: Tensor, generator: Optional[torch.Generator] = None,
                 new_video: Optional[Tensor] = None, starts: Optional[Tensor] = None) -> Tensor:
        x = self.clip(frames, generator=generator) if self.clip is not None else frames
        return self.appearance(x, generator=generator, new_video=new_video, starts=starts)


def build_augment(data_cfg):
    """The training augmentation of the Config's `data` section (None when data.augment is off
    and data.augment_appearance is 0); `surgflow train` and the input-path audit both build it here."""
    clip = ClipAugment() if data_cfg.augment else None
    strength = float(getattr(data_cfg, "augment_appearance", 0.0))
    if strength > 0:
        return VideoAugment(clip, AppearanceAugment(strength))
    return clip
