"""Synthetic surgery generator: a dataset in the exact Cholec80 layout with real h264 video.

    OUT/videos/videoNN.mp4                     h264, yuv420p, 25 fps
    OUT/phase_annotations/videoNN-phase.txt    `Frame\\tPhase`, one row per 25-fps frame
    OUT/tool_annotations/videoNN-tool.txt      `Frame\\t<7 tools>`, one row every 25 frames

What makes it a useful stand-in for Cholec80 (and not a trivial one):
- phases follow the Cholec80 order with varied durations (CleaningCoagulation and
  GallbladderRetraction sometimes swap, cleaning is sometimes skipped, clipping sometimes repeats);
- the background "tissue" differs between phases in texture and structure (blob scale, stripe
  orientation and frequency, speckles) while its mean colour is drawn per video, so one frame's mean
  colour does not tell the phase;
- instruments are drawn as metallic shafts entering from the border with a tool-specific tip; their
  use is tied to phases (Hook in dissection, Clipper then Scissors in ClippingCutting, Irrigator and
  Bipolar in CleaningCoagulation, SpecimenBag in packaging, Grasper most of the time);
- Clipper, Scissors, Irrigator and SpecimenBag are announced by a growing shadow where they will
  enter, 30-90 s before they appear, so anticipation needs temporal context.

Labels are planned here; data/synth_render.py draws and encodes the frames (and defines the
SynthProfile and Plan records both use). Everything is drawn from `np.random.default_rng([seed,
video_index])` and encoded with one x264 thread, so a seed gives the same annotation bytes and the
same decoded frames on every run.

Profiles (`SynthProfile`, registered in PROFILES; `--profile clean|realistic|hard`) declare, in one
place, the variation of real laparoscopic video that is independent of the labels: lighting,
exposure and white balance per video with a slow drift, vignetting, camera pan and zoom, motion
blur, smoke, specular highlights, tissue texture jitter, instrument colour/size/pose, Cholec80-like
unequal phase durations, instruments used outside "their" phase, and cross-fades that start before
the phase boundary. Their random draws come from a second stream, `default_rng([seed, index,
VARIATION_STREAM])`, so `clean` (no variation) gives exactly the data of before profiles existed.
The profile and its parameters are recorded in OUT/synth.json.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# SynthProfile, Plan and the constants the frames need live in synth_render (one import
# direction: synth -> synth_render); importing them here keeps `surgflow.data.synth.X` working.
from surgflow.data.synth_render import ANNOUNCED, CLEAN, FPS, Plan, SynthProfile, render_video
from surgflow.io_utils import SurgflowError, atomic_write_json, atomic_write_text, progress
from surgflow.labels import CHOLEC80_PHASES, CHOLEC80_TOOLS

TOOL_IDX = {t: i for i, t in enumerate(CHOLEC80_TOOLS)}

# Cholec80's mean phase durations in seconds (EndoNet's table, docs/DOMAIN.md section 8): clipping
# and cutting ~7 % of a video, the two dissection phases ~74 %.
CHOLEC80_PHASE_SECONDS = (125.0, 954.0, 168.0, 857.0, 98.0, 178.0, 83.0)
# The same per phase ROUND: a fifth of the videos clip twice, and each phase lasts >= 2 s, so one
# round gets less than Cholec80's total for the share of clipping to stay at a few percent.
_CHOLEC80_ROUND_WEIGHT = (125.0, 954.0, 110.0, 857.0, 98.0, 178.0, 83.0)
VARIATION_STREAM = 7  # third seed word of the variation generator (the label/clean stream has two)

PROFILES = {
    "clean": CLEAN,
    # what real laparoscopy looks like (Cholec80-like durations, lighting, smoke, camera motion)
    "realistic": SynthProfile(
        "realistic", phase_weight=_CHOLEC80_ROUND_WEIGHT, duration_sigma=0.45, min_phase_seconds=2.0,
        off_phase_tools=0.3,
        fade_seconds=(1.0, 6.0), fade_lead=0.5, exposure=0.2, white_balance=0.08, drift=0.12,
        vignetting=0.35, pan=0.5, zoom=0.15, motion_blur=1.0, smoke=0.6, specular=4.0,
        texture=0.5, tool_colour=0.12, tool_size=0.15, tool_pose=0.06),
    # more of everything
    "hard": SynthProfile(
        "hard", phase_weight=_CHOLEC80_ROUND_WEIGHT, duration_sigma=0.6, min_phase_seconds=2.0,
        off_phase_tools=0.6,
        fade_seconds=(2.0, 10.0), fade_lead=0.5, exposure=0.35, white_balance=0.15, drift=0.25,
        vignetting=0.6, pan=1.0, zoom=0.3, motion_blur=3.0, smoke=1.5, specular=8.0,
        texture=1.0, tool_colour=0.25, tool_size=0.3, tool_pose=0.1),
}


def get_profile(profile) -> SynthProfile:
    """A SynthProfile from itself or its registered name."""
    if isinstance(profile, SynthProfile):
        return profile
    if profile not in PROFILES:
        raise SurgflowError(f"--profile {profile!r}: unknown synth profile; choose one of "
                            f"{', '.join(PROFILES)}")
    return PROFILES[profile]


# --------------------------------------------------------------------------------------------
# label plan
# --------------------------------------------------------------------------------------------
def _phase_sequence(rng: np.random.Generator) -> list[int]:
    order = [0, 1, 2, 3]
    if rng.random() < 0.2:  # a second clipping round during gallbladder dissection
        order += [2, 3]
    tail = [4, 5, 6]
    if rng.random() < 0.25:
        tail = [4, 6, 5]  # retraction before cleaning
    if rng.random() < 0.15:
        tail = [t for t in tail if t != 5]  # no cleaning needed
    return order + tail


def _markov(rng, n: int, p_on: float, mean_len: float) -> np.ndarray:
    """On/off runs with stationary on-probability p_on and mean run length ~mean_len seconds."""
    out = np.zeros(n, bool)
    if n <= 0 or p_on <= 0:
        return out
    state, t = rng.random() < p_on, 0
    while t < n:
        mean = mean_len * (p_on if state else 1 - p_on) * 2
        length = max(1, int(rng.exponential(max(mean, 1.0))))
        out[t:t + length] = state
        t += length
        state = not state
    return out


def _burst(out: np.ndarray, start: int, length: int) -> None:
    out[max(0, start):max(0, start + length)] = True


# Where each tool belongs (phases) when it is used outside it: only these tools wander.
_HOME_PHASES = {"Hook": (0, 1, 3), "Clipper": (2,), "Scissors": (2,), "Irrigator": (5,),
                "Bipolar": (3, 5), "SpecimenBag": (4, 6)}


def _off_phase_uses(vrng: np.random.Generator, tools: np.ndarray, sec_phase: np.ndarray,
                    p: float) -> None:
    """Per tool, with probability p per video: 1-2 short uses (2-6 s) at times drawn uniformly
    over the video (not from the labels), kept where they fall outside the tool's home phases."""
    rows = len(sec_phase)
    for name, home in _HOME_PHASES.items():
        if vrng.random() >= p:
            continue
        for _ in range(int(vrng.integers(1, 3))):
            length, start = int(vrng.integers(2, 7)), int(vrng.integers(0, max(rows - 2, 1)))
            span = np.zeros(rows, bool)
            _burst(span, start, length)
            tools[span & ~np.isin(sec_phase, home), TOOL_IDX[name]] = True


def make_plan(rng: np.random.Generator, seconds: float, profile: SynthProfile = CLEAN,
              vrng: np.random.Generator | None = None) -> Plan:
    """Labels of one video; `vrng` (the variation stream) is needed only for profiles with
    instruments outside their phase."""
    frames = int(round(seconds * FPS)) + int(rng.integers(0, FPS))  # not a multiple of 25
    seq = _phase_sequence(rng)
    w = np.asarray(profile.phase_weight, np.float64)[seq] * rng.lognormal(0.0, profile.duration_sigma,
                                                                           len(seq))
    min_len = min(int(profile.min_phase_seconds * FPS), frames // (2 * len(seq)))  # a few seconds
    lens = min_len + np.floor(w / w.sum() * (frames - min_len * len(seq))).astype(np.int64)
    lens[np.argmax(lens)] += frames - lens.sum()  # exact total
    bounds = np.concatenate([[0], np.cumsum(lens)])
    phase = np.repeat(np.asarray(seq, np.int64), lens)

    rows = -(-frames // FPS)
    tools = np.zeros((rows, len(CHOLEC80_TOOLS)), bool)
    T = {name: tools[:, i] for name, i in TOOL_IDX.items()}
    T["Grasper"][:] = _markov(rng, rows, 0.75, 20)
    # tool row r (frame 25 r) lies in phase segment [start, end) iff ceil(start/25) <= r < ceil(end/25)
    for p, a, b in zip(seq, -(-bounds[:-1] // FPS), -(-bounds[1:] // FPS)):
        a, b = int(a), int(b)
        n = b - a
        if n <= 0:
            continue
        if p == 0:
            T["Hook"][a:b] |= _markov(rng, n, 0.2, 6)
        elif p in (1, 3):
            T["Hook"][a:b] |= _markov(rng, n, 0.8, 15)
            if p == 3:
                T["Bipolar"][a:b] |= _markov(rng, n, 0.08, 4)
        elif p == 2:
            # clips in the first half, then the cut
            k = int(rng.integers(2, 4))
            for j in range(k):
                _burst(T["Clipper"][a:b], int(n * (0.05 + 0.15 * j)) + int(rng.integers(0, 2)),
                       int(rng.integers(2, 5)))
            _burst(T["Scissors"][a:b], int(n * 0.62) + int(rng.integers(0, 3)), int(rng.integers(3, 7)))
        elif p == 4:
            _burst(T["SpecimenBag"][a:b], int(n * rng.uniform(0.1, 0.3)), n)
        elif p == 5:
            T["Bipolar"][a:b] |= _markov(rng, n, 0.45, 6)
            _burst(T["Irrigator"][a:b], int(n * rng.uniform(0.2, 0.4)), int(n * rng.uniform(0.25, 0.45)))
        elif p == 6:
            _burst(T["SpecimenBag"][a:b], 0, int(n * rng.uniform(0.3, 0.7)))
    if profile.off_phase_tools > 0:
        _off_phase_uses(vrng, tools, phase[::FPS], profile.off_phase_tools)
    # `Grasper` rarely disappears while the specimen bag is handled
    T["Grasper"][T["SpecimenBag"]] |= rng.random(int(T["SpecimenBag"].sum())) < 0.8

    # precursors: a ramp 0 -> 1 over the 30-90 s before each onset, after the previous use ends
    pre = np.zeros((frames, len(ANNOUNCED)), np.float32)
    for j, name in enumerate(ANNOUNCED):
        used = T[name]
        onsets = np.nonzero(used & ~np.concatenate([[False], used[:-1]]))[0]
        last_end = 0
        for s in onsets:
            lead = int(rng.integers(30, 91))
            start = max(last_end, int(s) - lead)
            if s > start:
                f0, f1 = start * FPS, int(s) * FPS
                pre[f0:f1, j] = np.maximum(pre[f0:f1, j], np.linspace(0.15, 1.0, f1 - f0, dtype=np.float32))
            end = int(s)
            while end < len(used) and used[end]:
                end += 1
            last_end = end
    return Plan(frames=frames, phase=phase, tools=tools, precursor=pre)


def _phase_text(plan: Plan) -> str:
    lines = ["Frame\tPhase"] + [f"{i}\t{CHOLEC80_PHASES[p]}" for i, p in enumerate(plan.phase.tolist())]
    return "\n".join(lines) + "\n"


def _tool_text(plan: Plan) -> str:
    lines = ["Frame\t" + "\t".join(CHOLEC80_TOOLS)]
    for r, row in enumerate(plan.tools.astype(int).tolist()):
        lines.append(f"{r * FPS}\t" + "\t".join(map(str, row)))
    return "\n".join(lines) + "\n"


def _one_video(args) -> Path:
    out, index, seed, width, height, min_s, max_s, profile = args
    rng = np.random.default_rng([seed, index])
    vrng = np.random.default_rng([seed, index, VARIATION_STREAM])  # variations: never the labels
    seconds = float(rng.uniform(min_s, max_s))
    plan = make_plan(rng, seconds, profile, vrng)
    name = f"video{index:02d}"
    video = out / "videos" / f"{name}.mp4"
    # annotations are written after the video so a finished annotation implies a finished video
    render_video(video, plan, rng, width, height, profile, vrng)
    atomic_write_text(out / "phase_annotations" / f"{name}-phase.txt", _phase_text(plan))
    atomic_write_text(out / "tool_annotations" / f"{name}-tool.txt", _tool_text(plan))
    return video


def synthesize(out, videos: int = 12, seed: int = 0, width: int = 320, height: int = 180,
               min_seconds: float = 60.0, max_seconds: float = 180.0,
               workers: int | None = None, profile: str | SynthProfile = "clean") -> list[Path]:
    """Write `videos` synthetic surgeries to `out` (Cholec80 layout); returns the video paths.
    `profile`: a name in PROFILES or a SynthProfile (the variation; recorded in OUT/synth.json)."""
    out = Path(out)
    prof = get_profile(profile)
    if videos < 1:
        raise SurgflowError(f"--videos must be >= 1, got {videos}")
    if width % 2 or height % 2 or width < 32 or height < 32:
        raise SurgflowError(f"--width/--height must be even and >= 32 (yuv420p), got {width}x{height}")
    if not (0 < min_seconds <= max_seconds):
        raise SurgflowError(f"need 0 < --min-seconds <= --max-seconds, got {min_seconds}, {max_seconds}")
    if min_seconds < 20:
        raise SurgflowError(f"--min-seconds must be >= 20 so every phase lasts a few seconds, got "
                            f"{min_seconds}")
    try:
        for sub in ("videos", "phase_annotations", "tool_annotations"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SurgflowError(f"cannot create output folder {out}: {e}; choose a writable path") from None
    # what the dataset is made from, written first so that even a partial set says it
    atomic_write_json(out / "synth.json", {
        "generator": "surgflow synth", "seed": seed, "videos": videos, "size_hw": [height, width],
        "min_seconds": min_seconds, "max_seconds": max_seconds, "profile": prof.to_dict()})
    jobs = [(out, i, seed, width, height, min_seconds, max_seconds, prof)
            for i in range(1, videos + 1)]
    workers = workers or min(videos, os.cpu_count() or 1)
    if workers <= 1:
        paths = [_one_video(j) for j in progress(jobs, desc="synth", unit="video")]
    else:
        from surgflow.parallel import run_in_processes  # light: --help imports synth

        done = progress(run_in_processes(_one_video, [(j,) for j in jobs], workers, start_method="fork"),
                        total=len(jobs), desc="synth", unit="video")
        paths = sorted(done, key=lambda v: (len(v.name), v.name))  # video09 before video10, video100
    return paths
