import functools
import math

import numpy as np
import pytest

from surgflow.data.synth import synthesize
from surgflow.io_utils import SurgflowError
from surgflow.labels import CHOLEC80_PHASES, CHOLEC80_TOOLS


@functools.lru_cache(maxsize=8)
def _decode(path):
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return np.stack(frames), float(s.average_rate), s.codec_context.name, s.format.name


def _read_phase(path):
    lines = path.read_text().splitlines()
    return lines[0], [ln.split("\t") for ln in lines[1:]]


def test_deterministic_per_seed(tmp_path):
    kw = dict(videos=1, width=64, height=48, min_seconds=30, max_seconds=31, workers=1)
    a = synthesize(tmp_path / "a", seed=3, **kw)[0]
    b = synthesize(tmp_path / "b", seed=3, **kw)[0]
    synthesize(tmp_path / "c", seed=4, **kw)
    for sub, suffix in [("phase_annotations", "phase"), ("tool_annotations", "tool")]:
        fa = (tmp_path / "a" / sub / f"video01-{suffix}.txt").read_bytes()
        assert fa == (tmp_path / "b" / sub / f"video01-{suffix}.txt").read_bytes()
    assert (tmp_path / "a/tool_annotations/video01-tool.txt").read_bytes() != \
        (tmp_path / "c/tool_annotations/video01-tool.txt").read_bytes()
    fa, fb = _decode(a)[0], _decode(b)[0]
    assert fa.shape == fb.shape and np.array_equal(fa, fb)


def test_cholec80_layout_exact(synthetic_raw):
    for i in range(1, 5):
        name = f"video{i:02d}"
        frames, rate, codec, pix = _decode(synthetic_raw / "videos" / f"{name}.mp4")
        assert (rate, codec, pix) == (25.0, "h264", "yuv420p")
        assert frames.shape[1:] == (72, 128, 3)
        header, rows = _read_phase(synthetic_raw / "phase_annotations" / f"{name}-phase.txt")
        assert header == "Frame\tPhase"
        assert len(rows) == len(frames)  # one row per decoded 25-fps frame
        assert [int(r[0]) for r in rows] == list(range(len(frames)))
        assert {r[1] for r in rows} <= set(CHOLEC80_PHASES) and rows[0][1] == "Preparation"
        t = (synthetic_raw / "tool_annotations" / f"{name}-tool.txt").read_text().splitlines()
        assert t[0] == "Frame\t" + "\t".join(CHOLEC80_TOOLS)
        assert len(t) - 1 == math.ceil(len(frames) / 25)
        assert [int(r.split("\t")[0]) for r in t[1:]] == list(range(0, len(frames), 25))
        assert all(set(r.split("\t")[1:]) <= {"0", "1"} and len(r.split("\t")) == 8 for r in t[1:])


def _labels(root, name):
    _, rows = _read_phase(root / "phase_annotations" / f"{name}-phase.txt")
    phase = np.array([CHOLEC80_PHASES.index(r[1]) for r in rows])
    t = (root / "tool_annotations" / f"{name}-tool.txt").read_text().splitlines()[1:]
    tools = np.array([[int(v) for v in r.split("\t")[1:]] for r in t], bool)
    return phase, tools


def test_phases_ordered_and_tools_tied_to_phases(synthetic_raw):
    for i in range(1, 5):
        phase, tools = _labels(synthetic_raw, f"video{i:02d}")
        assert phase[0] == 0 and set(phase.tolist()) >= {0, 1, 2, 3, 4}
        sec_phase = phase[::25]
        col = {t: tools[:, k] for k, t in enumerate(CHOLEC80_TOOLS)}
        assert col["Clipper"].any() and col["Scissors"].any()
        assert set(sec_phase[col["Clipper"]]) == {2} and set(sec_phase[col["Scissors"]]) == {2}
        # the clipper comes before the scissors in each clipping phase
        assert np.nonzero(col["Clipper"])[0][0] < np.nonzero(col["Scissors"])[0][0]
        assert set(sec_phase[col["SpecimenBag"]]) <= {4, 6} and col["SpecimenBag"][sec_phase == 4].any()
        assert set(sec_phase[col["Irrigator"]]) <= {5}
        assert set(sec_phase[col["Hook"]]) <= {0, 1, 3}
        assert col["Grasper"].mean() > 0.4


def _texture_features(frames):
    """Log energy of the grey-level spectrum in 3 frequency bands x 5 orientations: [N, 15]."""
    g = frames.astype(np.float32).mean(-1)
    g = g - g.mean((1, 2), keepdims=True)
    F = np.abs(np.fft.rfft2(g))
    fy, fx = np.fft.fftfreq(g.shape[1])[:, None], np.fft.rfftfreq(g.shape[2])[None]
    r, th = np.hypot(fy, fx), np.arctan2(fy, fx)
    masks = [(r > a) & (r <= b) & (np.abs(th - t) < 0.4)
             for a, b in [(0, 0.03), (0.03, 0.08), (0.08, 0.2)] for t in np.linspace(-1.5, 1.5, 5)]
    return np.log1p(np.stack([F[:, m].mean(1) for m in masks], 1))


def test_phases_learnable_from_texture_not_from_mean_colour(prepared_synthetic):
    """Leave-one-video-out nearest centroid (standardised features): a frame's texture spectrum
    predicts the phase far better than its mean colour (near or below chance: colour varies per
    video)."""
    from surgflow.data.store import PreparedDataset

    ds = PreparedDataset(prepared_synthetic)
    tex, col, y, g = [], [], [], []
    for k, v in enumerate(ds.videos):
        f = ds.read_frames(v, 0, ds.num_frames(v))
        tex.append(_texture_features(f))
        col.append(f.reshape(len(f), -1, 3).mean(1))
        y.append(ds.phase(v))
        g.append(np.full(len(f), k))
    tex, col, y, g = map(np.concatenate, (tex, col, y, g))

    def loo(X):
        acc = []
        for k in np.unique(g):
            tr, te = g != k, g == k
            Z = (X - X[tr].mean(0)) / (X[tr].std(0) + 1e-6)
            ps = np.unique(y[tr])
            cents = np.stack([Z[tr & (y == p)].mean(0) for p in ps])
            pred = ps[np.linalg.norm(Z[te][:, None] - cents[None], axis=2).argmin(1)]
            acc.append((pred == y[te]).mean())
        return float(np.mean(acc))

    acc_tex, acc_col = loo(tex), loo(col)
    assert acc_col < 0.35, acc_col  # 7 phases; the largest phase alone is ~0.3
    assert acc_tex > acc_col + 0.25, (acc_tex, acc_col)


def test_precursor_shadow_before_clipper(synthetic_raw):
    """The frames before the first Clipper use darken progressively (a growing shadow)."""
    frames, *_ = _decode(synthetic_raw / "videos" / "video01.mp4")
    _, tools = _labels(synthetic_raw, "video01")
    onset = int(np.nonzero(tools[:, CHOLEC80_TOOLS.index("Clipper")])[0][0])
    # the clipper's shadow grows near the bottom centre of the frame
    region = frames[:, 50:, 50:80].mean((1, 2, 3))
    early, late = region[max(0, onset - 25) * 25], region[onset * 25 - 5]
    assert late < early


def test_bad_arguments(tmp_path):
    with pytest.raises(SurgflowError, match="even"):
        synthesize(tmp_path, videos=1, width=65, height=48)
    with pytest.raises(SurgflowError, match="min-seconds"):
        synthesize(tmp_path, videos=1, min_seconds=50, max_seconds=40)


def test_cli(tmp_path, capsys):
    from surgflow.cli import main

    rc = main(["synth", str(tmp_path / "s"), "--videos", "1", "--seed", "1", "--width", "64",
               "--height", "48", "--min-seconds", "30", "--max-seconds", "30", "--workers", "1"])
    assert rc == 0
    assert (tmp_path / "s/videos/video01.mp4").stat().st_size > 0
    assert "wrote 1 synthetic videos" in capsys.readouterr().out


# ------------------------------------------------------------------ profiles (issue 20)
# Fingerprint of the data of seed 3 (2 videos, 64x48, 30-31 s) made by the generator BEFORE profiles
# existed: sha256 of the raw rgb frames handed to the encoder, in order, and of the annotation files.
_CLEAN_FRAMES = "3a878c5076672297743c7d813cb1429d2c6d22886fa015d9e8d3299363976899"
_CLEAN_LABELS = {
    "phase_annotations/video01-phase.txt": "73c918683ec2888d0a5cf8b577e58c2f6cb5650bdd5cafd617023f6536e9b2ca",
    "phase_annotations/video02-phase.txt": "3660d213cff6ae1865d92c8ab0f90797bbef1c80e3690db601757c0f64abafcf",
    "tool_annotations/video01-tool.txt": "0de0be55141db0636a78e6979efb60f83c3428fd935d0a31bb500153570bbc49",
    "tool_annotations/video02-tool.txt": "afd1040c4c148b0db25abf36ac7e7fd518473cc8e1781b47896944ea178c7b13",
}


def test_clean_profile_reproduces_the_data_of_before_profiles(tmp_path, monkeypatch):
    import hashlib
    import json

    import av

    digest, encode = hashlib.sha256(), av.VideoFrame.from_ndarray

    def spy(arr, format):
        digest.update(np.ascontiguousarray(arr).tobytes())
        return encode(arr, format=format)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", spy)
    out = tmp_path / "s"
    synthesize(out, videos=2, seed=3, width=64, height=48, min_seconds=30, max_seconds=31,
               workers=1, profile="clean")
    assert digest.hexdigest() == _CLEAN_FRAMES
    for rel, h in _CLEAN_LABELS.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == h, rel
    meta = json.loads((out / "synth.json").read_text())  # what the set was made from
    assert meta["profile"]["name"] == "clean" and meta["seed"] == 3 and meta["size_hw"] == [48, 64]


def _plans(profile, n=40, seconds=150.0):
    from surgflow.data.synth import VARIATION_STREAM, get_profile, make_plan

    prof = get_profile(profile)
    return [make_plan(np.random.default_rng([5, i]), seconds, prof,
                      np.random.default_rng([5, i, VARIATION_STREAM])) for i in range(n)]


def test_realistic_phase_durations_are_as_unequal_as_cholec80():
    def shares(profile):
        return np.mean([np.bincount(p.phase, minlength=7) / p.frames for p in _plans(profile)], 0)

    real, clean = shares("realistic"), shares("clean")
    assert real[2] < 0.08 < 0.12 < clean[2], (real, clean)  # ClippingCutting: a few percent
    assert set(np.argsort(real)[-2:].tolist()) == {1, 3} and real[1] + real[3] > 0.6, real
    assert shares("hard")[2] < 0.08


def test_realistic_uses_instruments_outside_their_phase():
    from surgflow.data.synth import _HOME_PHASES, TOOL_IDX

    def off_phase(plans):
        n = 0
        for p in plans:
            sec = p.phase[::25]
            n += any(bool((p.tools[:, TOOL_IDX[t]] & ~np.isin(sec, home)).any())
                     for t, home in _HOME_PHASES.items() if t not in ("Bipolar",))
        return n / len(plans)

    assert off_phase(_plans("clean", 20)) == 0.0
    assert 0.3 < off_phase(_plans("realistic", 20)) < 1.0  # some videos, with a probability


def _render(profile, vseed, plan_seed=1, size=(24, 40)):
    from surgflow.data.synth import get_profile, make_plan
    from surgflow.data.synth_render import render_frames

    rng = np.random.default_rng([plan_seed, 1])
    plan = make_plan(rng, 24.0)  # the same labels for every call
    frames = render_frames(plan, rng, size[1], size[0], get_profile(profile),
                           np.random.default_rng([vseed, 9]))
    return np.stack([f.copy() for f in frames]).astype(np.float32), plan


def test_appearance_varies_per_video_from_its_own_stream_not_from_the_labels():
    """Same labels and tissue draws, three variation streams: clean frames are identical; realistic
    ones differ per video in exposure and white balance (grey-world channel ratios)."""
    clean = [_render("clean", s)[0] for s in range(3)]
    assert all(np.array_equal(clean[0], c) for c in clean[1:])
    real = [_render("realistic", s)[0] for s in range(3)]
    ratio = np.array([np.log(r.mean((0, 1, 2)) / c.mean((0, 1, 2))) for r, c in zip(real, clean)])
    assert np.ptp(ratio[:, 0] - ratio[:, 1]) > 0.03 or np.ptp(ratio[:, 2] - ratio[:, 1]) > 0.03, ratio
    assert np.ptp(ratio.mean(1)) > 0.05, ratio  # exposure


def test_hard_profile_has_smoke_blur_vignetting_and_zoom():
    from surgflow.data.synth import PROFILES
    from surgflow.data.synth_render import _look

    lk = _look(PROFILES["hard"], np.random.default_rng(0), 25 * 180, 48, 64, 7)
    assert (lk["smoke"] > 0.1).mean() > 0.05 and (lk["blur"][:, 0] >= 2).any()
    assert lk["vig"][0, 0, 0] < 0.9 * lk["vig"][24, 32, 0]  # darker corners
    assert lk["zoom"].max() > 1.1 and np.ptp(lk["gain"], 0).min() > 0.05  # drifting light


def test_realistic_transitions_are_cross_fades_across_the_boundary():
    from surgflow.data.synth import PROFILES
    from surgflow.data.synth_render import transitions

    phase = np.repeat([0, 1, 2], [300, 400, 300])
    src, dst, alpha = transitions(phase, PROFILES["clean"], None)
    assert (alpha[:300] == 256).all() and alpha[300] == 0 and (alpha[300:350] < 256).all()
    src, dst, alpha = transitions(phase, PROFILES["realistic"], np.random.default_rng(0))
    fade = np.flatnonzero(alpha < 256)
    first = fade[fade < 500]
    assert first.min() < 300 < first.max(), "the picture changes before the label does"
    assert (np.diff(alpha[first]) > 0).all() and (src[first] == 0).all() and (dst[first] == 1).all()


def test_realistic_set_prepares_with_the_cholec80_layout(tmp_path):
    import json

    from surgflow.data.prepare import prepare
    from surgflow.data.store import PreparedDataset

    raw = tmp_path / "raw"
    synthesize(raw, videos=2, seed=2, width=64, height=48, min_seconds=30, max_seconds=32,
               workers=1, profile="hard")
    assert json.loads((raw / "synth.json").read_text())["profile"]["smoke"] > 0
    res = prepare("cholec80", raw, tmp_path / "prep", fps=1.0, size=(32, 48), workers=1)
    assert not res.failed, res.failed
    ds = PreparedDataset(tmp_path / "prep")
    assert len(ds.videos) == 2 and ds.tools(ds.videos[0]) is not None
    with pytest.raises(SurgflowError, match="realistic"):
        synthesize(tmp_path / "x", videos=1, profile="nope")


def test_cli_profile_flag(tmp_path, capsys):
    import json

    from surgflow.cli import main

    assert main(["synth", str(tmp_path / "s"), "--videos", "1", "--size", "64x48", "--min-seconds",
                 "30", "--max-seconds", "30", "--workers", "1", "--profile", "realistic"]) == 0
    assert "profile realistic" in capsys.readouterr().out
    assert json.loads((tmp_path / "s/synth.json").read_text())["profile"]["name"] == "realistic"


def test_cross_fade_frames_are_blends_of_the_two_phases():
    """Only the transition differs from clean (6 s fade, half of it before the boundary): frames
    are identical to clean's outside the fades, and in the fade's first half (label still the old
    phase, clean shows the old tissue) they depart from it in proportion to the blend weight."""
    import dataclasses

    from surgflow.data.synth import CLEAN, FPS, Plan
    from surgflow.data.synth_render import render_frames, transitions

    n = 20 * FPS
    phase = np.repeat([0, 1], [n // 2, n - n // 2])
    plan = Plan(frames=n, phase=phase, tools=np.zeros((-(-n // FPS), 7), bool),
                precursor=np.zeros((n, 4), np.float32))
    fade = dataclasses.replace(CLEAN, name="fade", fade_seconds=(6.0, 6.0), fade_lead=0.5)

    def render(profile):
        return np.stack([f.astype(np.float32) for f in render_frames(
            plan, np.random.default_rng(0), 40, 24, profile, np.random.default_rng(1))])

    diff = np.abs(render(fade) - render(CLEAN)).mean((1, 2, 3))
    alpha = transitions(phase, fade, np.random.default_rng(1))[2]
    start, b = n // 2 - 75, n // 2  # 6 s = 150 frames, 75 before the boundary
    assert (diff[:start] == 0).all() and (diff[start + 150:] == 0).all()
    lead = slice(start + 1, b)
    assert (diff[lead] > 0).all() and np.corrcoef(alpha[lead], diff[lead])[0, 1] > 0.95
