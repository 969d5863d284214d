"""ClipAugment: one set of random parameters per sequence, applied identically to all its frames."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from surgflow.data.augment import ClipAugment

ALL_ON = dict(p_affine=1.0, p_crop=1.0, p_color=1.0, p_rgb_shift=1.0, saturation=0.3, p_flip=0.5)
ALL_OFF = dict(p_affine=0.0, p_crop=0.0, p_color=0.0, p_rgb_shift=0.0, p_flip=0.0)


def smooth_images(n, h=24, w=40, seed=0):
    """Smooth random images (bilinear upsampling of noise): interpolation errors stay small."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bilinear",
                         align_corners=False)


def test_identical_frames_stay_identical_and_sequences_differ():
    B, T = 4, 5
    clip = smooth_images(B)[:, None].expand(B, T, 3, 24, 40).contiguous()  # T copies per sequence
    clip[1] = clip[0]  # two sequences with the same content
    out = ClipAugment(**ALL_ON)(clip, generator=torch.Generator().manual_seed(1))
    assert out.shape == clip.shape and out.dtype == clip.dtype
    assert torch.equal(out, out[:, :1].expand_as(out)), "all frames of a sequence transformed alike"
    assert (out - clip).abs().amax(dim=(1, 2, 3, 4)).min() > 0.01, "every sequence was augmented"
    assert not torch.allclose(out[0], out[1], atol=1e-3), "different parameters per sequence"
    assert out.min() >= 0 and out.max() <= 1


def test_moving_content_gets_the_same_transform():
    """Frame k of the clip is frame 0 shifted by k pixels; after augmentation frame k must equal the
    augmentation of (frame 0 shifted by k) with the same parameters, i.e. the transform is the same
    for every frame."""
    B, T, H, W = 3, 4, 24, 40
    base = smooth_images(B, H, W + T)
    clip = torch.stack([base[..., k:k + W] for k in range(T)], 1)  # [B, T, 3, H, W], content moves
    aug = ClipAugment(**ALL_ON)
    params = aug.sample_params(B, torch.Generator().manual_seed(3))
    out = aug.apply(clip, params)
    for k in range(T):  # augmenting frame k alone as a one-frame clip with the same parameters
        single = aug.apply(clip[:, k:k + 1], params)[:, 0]
        torch.testing.assert_close(out[:, k], single, atol=1e-6, rtol=0)
    # a per-frame augmentation would not satisfy this: different parameters per frame
    per_frame = torch.stack([aug.apply(clip[:, k:k + 1], aug.sample_params(
        B, torch.Generator().manual_seed(10 + k)))[:, 0] for k in range(T)], 1)
    assert not torch.allclose(per_frame, out, atol=1e-3)


def test_contrast_uses_each_frame_own_mean_with_the_clip_parameters():
    # frames of different brightness in one clip: contrast blends each frame towards its own mean
    # grey (no mixing over time), with the same contrast factor for every frame of the clip.
    B, T = 2, 3
    x = torch.rand(B, T, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    x[:, 1] += 0.4
    x[:, 2] = x[:, 0]  # frames 0 and 2 identical
    aug = ClipAugment(**{**ALL_OFF, "p_color": 1.0})
    params = aug.sample_params(B, torch.Generator().manual_seed(2))
    out = aug.apply(x, params)
    assert not torch.equal(out, x)
    torch.testing.assert_close(out[:, 2], out[:, 0])  # same content, same parameters
    for k in range(T):  # each frame alone, same parameters: identical
        torch.testing.assert_close(aug.apply(x[:, k:k + 1], params)[:, 0], out[:, k])


def test_identity_when_all_probabilities_are_zero():
    x = torch.rand(2, 3, 3, 10, 12)
    out = ClipAugment(**ALL_OFF)(x)
    assert torch.equal(out, x) and out is not x


def test_geometry_is_exact():
    aug = ClipAugment(**ALL_OFF)
    H, W = 8, 12
    x = torch.rand(1, 2, 3, H, W)

    def params(**kw):
        p = aug.sample_params(1)
        p["geometric"][:] = True
        for k, v in kw.items():
            p[k][:] = v
        return p

    y = aug.apply(x, params(shift=torch.tensor([2 / W, 1 / H])))  # content moves right 2, down 1
    torch.testing.assert_close(y[..., 1:, 2:], x[..., :-1, :-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(aug.apply(x, params(flip=True)), x.flip(-1), atol=1e-5, rtol=0)
    sq = torch.rand(1, 1, 3, 8, 8)
    torch.testing.assert_close(aug.apply(sq, params(angle=90.0)), torch.rot90(sq, 1, (-2, -1)),
                               atol=1e-5, rtol=0)  # counter-clockwise, as torchvision
    # crop half the size at the top-left corner and resize back == bilinear 2x upsampling there
    y = aug.apply(x, params(crop=0.5, crop_center=torch.tensor([-1.0, -1.0])))
    ref = F.interpolate(x[0, :, :, :H // 2, :W // 2], scale_factor=2, mode="bilinear")
    torch.testing.assert_close(y[0, :, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1], atol=1e-5, rtol=0)
    # zooming in by 2 equals the centre crop of half size
    torch.testing.assert_close(aug.apply(x, params(scale=2.0)), aug.apply(x, params(crop=0.5)))


def test_parameter_ranges_and_probabilities():
    aug = ClipAugment()
    p = aug.sample_params(4000, torch.Generator().manual_seed(0))
    applied = p["scale"] != 1
    assert 0.45 < applied.float().mean() < 0.55  # p_affine = 0.5
    assert p["shift"].abs().max() <= 0.05 and p["angle"].abs().max() <= 15
    assert (p["scale"] - 1).abs().max() <= 0.05
    assert p["crop"].min() >= 0.84 and not p["flip"].any()
    assert p["rgb_shift"].abs().max() <= 15 / 255 + 1e-9
    assert (p["saturation"] == 1).all()  # off by default, as in the paper


def test_deterministic_with_generator_and_range():
    x = torch.rand(3, 4, 3, 16, 20)
    aug = ClipAugment(**ALL_ON)
    a = aug(x, generator=torch.Generator().manual_seed(5))
    b = aug(x, generator=torch.Generator().manual_seed(5))
    c = aug(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # extreme colour settings still clamp into [0, 1]
    strong = ClipAugment(**ALL_ON, brightness=0.9, contrast=0.9, rgb_shift=0.5)(x)
    assert strong.min() >= 0 and strong.max() <= 1


def test_runs_on_meta_and_keeps_dtype():
    aug = ClipAugment(**ALL_ON)
    m = torch.empty(2, 3, 3, 16, 20, device="meta")
    out = aug(m, generator=torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == m.shape
    x = torch.rand(2, 3, 3, 16, 20, dtype=torch.float64)
    assert aug(x).dtype == torch.float64


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        ClipAugment()(torch.zeros(2, 3, 16, 20))
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        ClipAugment()(torch.zeros(1, 2, 3, 16, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match="p_affine"):
        ClipAugment(p_affine=1.5)


def test_colour_map_matches_torchvision():
    """Frame by frame (contrast uses the frame's own mean) and without clipping, the folded colour
    map equals torchvision's brightness -> contrast -> saturation followed by the RGB shift."""
    from torchvision.transforms.v2 import functional as TF

    x = 0.3 + 0.3 * torch.rand(3, 2, 3, 10, 12, generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)
    x[:, 1] *= 0.5  # a darker second frame: its own mean grey
    aug = ClipAugment(**{**ALL_OFF, "p_color": 1.0, "p_rgb_shift": 1.0}, saturation=0.2)
    params = aug.sample_params(3, torch.Generator().manual_seed(1))
    out = aug.apply(x, params)
    for b in range(3):
        for k in range(2):
            ref = TF.adjust_brightness(x[b, k], float(params["brightness"][b]))
            ref = TF.adjust_contrast(ref, float(params["contrast"][b]))
            ref = TF.adjust_saturation(ref, float(params["saturation"][b]))
            ref = ref + params["rgb_shift"][b].view(3, 1, 1)
            torch.testing.assert_close(out[b, k], ref.clamp(0, 1), atol=1e-6, rtol=0)


# ------------------------------------------------------------ AppearanceAugment (issue 20)
def _appearance(**kw):
    from surgflow.data.augment import AppearanceAugment

    return AppearanceAugment(**{"p_vignetting": 1.0, "p_blur": 1.0, **kw})


def _video(B=2, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.2 + 0.6 * torch.rand(B, T, 3, 12, 16, generator=g)).clamp(0, 1)


def test_appearance_is_causal():
    """Frames after t replaced: outputs at frames <= t unchanged under the same random draws
    (contrast towards each frame's own mean, blur and vignetting spatial only, drift by frame index)."""
    x = _video()
    y = x.clone()
    y[:, 6:] = torch.rand_like(y[:, 6:])
    a = _appearance()(x, torch.Generator().manual_seed(1), new_video=torch.ones(2, dtype=torch.bool),
                      starts=torch.tensor([0, 40]))
    b = _appearance()(y, torch.Generator().manual_seed(1), new_video=torch.ones(2, dtype=torch.bool),
                      starts=torch.tensor([0, 40]))
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    assert (a - x).abs().amax() > 0.02  # it does change the frames


def test_appearance_is_consistent_over_the_chunks_of_a_video():
    """A lane's video in two chunks (new_video then not) = the whole video in one call; a lane that
    starts a new video gets new parameters."""
    x = _video(T=10)
    full = _appearance()(x, torch.Generator().manual_seed(3), new_video=torch.ones(2, dtype=torch.bool),
                         starts=torch.tensor([0, 0]))
    aug = _appearance()
    first = aug(x[:, :4], torch.Generator().manual_seed(3), new_video=torch.ones(2, dtype=torch.bool),
                starts=torch.tensor([0, 0]))
    second = aug(x[:, 4:], torch.Generator().manual_seed(99), new_video=torch.tensor([False, True]),
                 starts=torch.tensor([4, 4]))
    torch.testing.assert_close(torch.cat([first, second], 1)[0], full[0], rtol=0, atol=1e-6)
    assert not torch.allclose(second[1], full[1, 4:], atol=1e-3)  # lane 1 started another video
    # without new_video (clips): every call draws, one set per sequence
    c1, c2 = aug(x[:, :4], torch.Generator().manual_seed(5)), aug(x[:, :4], torch.Generator().manual_seed(6))
    assert not torch.allclose(c1, c2, atol=1e-3)


def test_appearance_is_off_by_default_and_built_from_the_config():
    from surgflow.config import load_config
    from surgflow.data.augment import AppearanceAugment, VideoAugment, build_augment

    assert isinstance(build_augment(load_config(None).data), ClipAugment)  # unchanged default
    aug = build_augment(load_config(None, ["data.augment_appearance=0.5"]).data)
    assert isinstance(aug, VideoAugment) and isinstance(aug.clip, ClipAugment)
    assert isinstance(aug.appearance, AppearanceAugment) and aug.appearance.strength == 0.5
    assert build_augment(load_config(None, ["data.augment=false"]).data) is None
    x = _video()
    torch.testing.assert_close(AppearanceAugment(strength=0.0)(x, torch.Generator().manual_seed(0)), x)


def test_input_path_audit_stays_clean_with_appearance(tiny_root):
    from surgflow.config import load_config
    from surgflow.training.input_audit import audit_input_path

    cfg = load_config(None, [
        f"data.root={tiny_root}", "data.split=auto", "data.augment=true", "data.augment_appearance=1.0",
        "model.backbone=test_resnet", "model.norm=gn", "model.hidden=16", "train.seq_len=6",
        "train.batch_size=2", "train.device=cpu"])
    findings = audit_input_path(cfg, augment="config", draws=2)
    kinds = {f.kind for f in findings}
    assert {"input_future", "input_padding"} <= kinds, [f.verdict for f in findings]
    assert not any(f.leak for f in findings), [f.verdict for f in findings]
    assert any("augmentation on" in f.verdict for f in findings)


def test_input_path_audit_reaches_the_appearance_augmentation(tiny_root):
    """The same audit flags a per-video augmentation that pools over time: the check above is real."""
    from surgflow.config import load_config
    from surgflow.data.augment import AppearanceAugment, VideoAugment
    from surgflow.training.input_audit import audit_input_path

    class PooledOverTime(AppearanceAugment):
        def apply(self, frames, params, starts=None):
            x = super().apply(frames, params, starts)
            return (x + 0.1 * x.mean(1, keepdim=True)).clamp(0, 1)

    cfg = load_config(None, [
        f"data.root={tiny_root}", "data.split=auto", "model.backbone=test_resnet", "model.norm=gn",
        "model.hidden=16", "train.seq_len=6", "train.batch_size=2", "train.device=cpu"])
    f = {x.kind: x for x in audit_input_path(cfg, augment=VideoAugment(None, PooledOverTime()), draws=1)}
    assert f["input_future"].leak and "augmentation (VideoAugment)" in f["input_future"].verdict


def test_appearance_colour_step_matches_the_naive_formula():
    """Colour map (saturation, hue, gains), then contrast towards each frame's own mean grey of the
    mapped frame, as the docstring says (the implementation folds both into one affine map)."""
    from surgflow.data.augment import _GRAY, AppearanceAugment

    aug = AppearanceAugment(vignetting=0.0, blur=0.0, drift=0.0)
    x = _video(B=3, T=4)
    p = aug.sample_params(3, torch.Generator().manual_seed(4))
    M = AppearanceAugment._color_matrix(p).float()
    y = torch.einsum("bij,btjhw->btihw", M, x)
    grey = (y * torch.tensor(_GRAY)[None, None, :, None, None]).sum(2, keepdim=True).mean((3, 4), keepdim=True)
    fc = p["contrast"].float().view(3, 1, 1, 1, 1)
    torch.testing.assert_close(aug.apply(x, p), (fc * y + (1 - fc) * grey).clamp(0, 1), rtol=0, atol=1e-5)
    assert not torch.allclose(M, torch.eye(3).expand(3, 3, 3), atol=1e-2)  # it is not the identity
