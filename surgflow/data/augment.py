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


def build_augment(cfg) -> Optional[ClipAugment]:
    """The training augmentation of a config (None when data.augment is off); `surgflow train` and
    the input-path audit both build it here."""
    return ClipAugment() if cfg.data.augment else None
