"""Issue 10, data side: prepare decides completeness from content, `--check` fails on anything
incomplete, one prepare per OUT, corrupt stores name the video, VFR and rotated videos."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from surgflow.cli import main
from surgflow.data.prepare import check, prepare
from surgflow.io_utils import SurgflowError

SIZE = (32, 56)


def _raw_subset(src: Path, dst: Path, names=("video01", "video02")) -> Path:
    for sub in ("videos", "phase_annotations", "tool_annotations"):
        (dst / sub).mkdir(parents=True)
    for n in names:
        shutil.copy2(src / "videos" / f"{n}.mp4", dst / "videos")
        shutil.copy2(src / "phase_annotations" / f"{n}-phase.txt", dst / "phase_annotations")
        shutil.copy2(src / "tool_annotations" / f"{n}-tool.txt", dst / "tool_annotations")
    return dst


@pytest.fixture()
def small(synthetic_raw, tmp_path):
    raw = _raw_subset(synthetic_raw, tmp_path / "raw")
    out = tmp_path / "out"
    res = prepare("cholec80", raw, out, fps=1.0, size=SIZE)
    assert sorted(res.done) == ["video01", "video02"] and not res.failed
    return raw, out


def test_corrected_annotation_of_equal_size_is_reprepared(small, capsys):
    raw, out = small
    tool = raw / "tool_annotations" / "video01-tool.txt"
    lines = tool.read_text().splitlines()
    cells = lines[3].split("\t")
    cells[1] = "1" if cells[1] == "0" else "0"  # one tool value 0 <-> 1: same byte size
    lines[3] = "\t".join(cells)
    size = tool.stat().st_size
    tool.write_text("\n".join(lines) + "\n")
    assert tool.stat().st_size == size
    phase = raw / "phase_annotations" / "video02-phase.txt"
    text = phase.read_text()
    assert "GallbladderDissection" in text and len("GallbladderDissection") == len("GallbladderRetraction")
    swapped = text.replace("GallbladderDissection", "@").replace("GallbladderRetraction",
                                                                    "GallbladderDissection").replace("@", "GallbladderRetraction")
    phase.write_text(swapped)

    # --check with RAW_ROOT reports both changed sources before anything is redone
    assert main(["prepare", "cholec80", str(raw), str(out), "--check"]) == 1
    err = capsys.readouterr().err
    assert "video01: raw source changed since prepare (video01-tool.txt: content changed)" in err
    assert "video02: raw source changed since prepare (video02-phase.txt: content changed)" in err

    res = prepare("cholec80", raw, out, fps=1.0, size=SIZE)
    assert sorted(res.done) == ["video01", "video02"] and res.skipped == []
    assert "video01-tool.txt: content changed" in res.redone["video01"]
    assert "video02-phase.txt: content changed" in res.redone["video02"]
    tools = np.load(out / "video01" / "tools.npy")
    assert tools[2, 0] == float(cells[1])  # the corrected label is what training reads now
    assert check(out, "cholec80", raw) == []
    # unchanged sources, only the video's mtime touched: nothing is redone (full hash decides)
    os.utime(raw / "videos" / "video01.mp4", None)
    res = prepare("cholec80", raw, out, fps=1.0, size=SIZE)
    assert res.done == [] and sorted(res.skipped) == ["video01", "video02"]
    # a changed video (same size, other bytes at the end) is redone
    v = raw / "videos" / "video02.mp4"
    data = bytearray(v.read_bytes())
    data[-10] ^= 0xFF
    v.write_bytes(bytes(data))
    assert any("video02.mp4: content changed" in p for p in check(out, "cholec80", raw))


def test_check_fails_on_failed_missing_and_empty(small, tmp_path, capsys):
    raw, out = small
    # a failed video: its annotation is broken; the other one stays prepared
    (raw / "phase_annotations" / "video02-phase.txt").write_text("Frame\tPhase\n0\tNope\n")
    res = prepare("cholec80", raw, out, fps=1.0, size=SIZE)
    assert list(res.failed) == ["video02"]
    problems = check(out)
    assert any(p.startswith("video02: failed to prepare") and "Nope" in p for p in problems)
    assert main(["prepare", "cholec80", str(raw), str(out), "--check"]) == 1
    # a raw video never prepared is reported given RAW_ROOT
    shutil.copy2(raw / "videos" / "video01.mp4", raw / "videos" / "video03.mp4")
    shutil.copy2(raw / "phase_annotations" / "video01-phase.txt", raw / "phase_annotations" / "video03-phase.txt")
    assert any(p.startswith("video03: in ") and "not prepared" in p for p in check(out, "cholec80", raw))
    # an empty dataset is not OK
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"videos": {}, "fps": 1.0, "size": [32, 56]}))
    assert any("no prepared video" in p for p in check(empty))
    capsys.readouterr()
    assert main(["prepare", "cholec80", str(raw), str(empty), "--check"]) == 1


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_one_prepare_per_out(synthetic_raw, tmp_path):
    from surgflow.outputs import LOCK_NAME, FolderLock

    raw = _raw_subset(synthetic_raw, tmp_path / "raw", ("video01",))
    out = tmp_path / "out"
    with FolderLock(out, "surgflow prepare"):  # a live prepare (this process) holds OUT
        (out / ".tmp-video01-424242").mkdir()  # its temporary folder
        with pytest.raises(SurgflowError, match=r"in use by surgflow prepare \(pid \d+ .*another output"):
            prepare("cholec80", raw, out, fps=1.0, size=SIZE)
        assert (out / ".tmp-video01-424242").exists()  # the live run's work is left alone
    assert not (out / LOCK_NAME).exists()  # released on exit
    # a lock left by a killed run (its pid is gone) is taken over
    (out / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename,
                                             "command": "surgflow prepare"}))
    res = prepare("cholec80", raw, out, fps=1.0, size=SIZE)
    assert res.done == ["video01"] and not (out / LOCK_NAME).exists()
    assert not (out / ".tmp-video01-424242").exists()


def test_corrupt_store_read_names_video_and_fix(tiny_root, tmp_path):
    from surgflow.config import load_config
    from surgflow.data.store import PreparedDataset
    from surgflow.training.trainer import train

    root = tmp_path / "p"
    shutil.copytree(tiny_root, root)
    for v in ("video01", "video02", "video03", "video04"):  # truncated store files
        fb = root / v / "frames.bin"
        fb.write_bytes(fb.read_bytes()[: fb.stat().st_size // 2])
    ds = PreparedDataset(root)
    n = ds.num_frames("video01")
    with pytest.raises(SurgflowError, match=r"frame \d+ of video video01 cannot be decoded.*--check"):
        ds.read_frames("video01", 0, n)
    cfg = load_config(None, [f"data.root={root}", "data.split=all", "model.backbone=test_convnext",
                             "model.hidden=8", "train.seq_len=64", "train.max_steps=1",
                             "train.device=cpu", "data.val_subset="])
    with pytest.raises(SurgflowError, match=r"of video video0\d cannot be decoded.*surgflow prepare"):
        train(cfg, tmp_path / "run")


def _write_video(path: Path, n: int, size=(48, 64), rotation: int = 0, pts=None, rate=25):
    """h264 mp4 with n frames: a bright block in the top-left corner (to see the orientation)."""
    import av

    h, w = size
    with av.open(str(path), "w") as o:
        s = o.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if pts is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            s.set_display_rotation(rotation)
        for i in range(n):
            img = np.full((h, w, 3), 40, np.uint8)
            img[: h // 3, : w // 3] = 250
            img[h // 2:, :, 1] = (i * 7) % 255
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                fr.pts, fr.time_base = int(pts[i]), Fraction(1, 1000)
            for p in s.encode(fr):
                o.mux(p)
        for p in s.encode():
            o.mux(p)


def _cholec_raw(root: Path, n_rows: int) -> None:
    from surgflow.labels import CHOLEC80_PHASES, CHOLEC80_TOOLS

    (root / "phase_annotations").mkdir(parents=True)
    (root / "tool_annotations").mkdir()
    (root / "phase_annotations" / "video01-phase.txt").write_text(
        "Frame\tPhase\n" + "".join(f"{i}\t{CHOLEC80_PHASES[0]}\n" for i in range(n_rows)))
    (root / "tool_annotations" / "video01-tool.txt").write_text(
        "Frame\t" + "\t".join(CHOLEC80_TOOLS) + "\n" +
        "".join(f"{i}\t" + "\t".join(["0"] * 7) + "\n" for i in range(0, n_rows, 25)))


def test_vfr_mismatch_says_vfr_and_how_it_is_sampled(tmp_path):
    root = tmp_path / "raw"
    (root / "videos").mkdir(parents=True)
    # 100 frames over 6 s: intervals alternate 40 and 80 ms (a variable-rate recording)
    pts = np.cumsum([0] + [40 if i % 2 else 80 for i in range(99)])
    _write_video(root / "videos" / "video01.mp4", 100, pts=pts)
    _cholec_raw(root, 100)  # one annotation row per decoded frame, read as 25 fps rows
    res = prepare("cholec80", root, tmp_path / "out", fps=1.0, size=SIZE)
    msg = res.failed["video01"]
    assert "VARIABLE frame rate" in msg and "by presentation timestamp" in msg
    assert "40.0 to 80.0 ms" in msg and "-fps_mode cfr" in msg


def test_rotation_metadata_is_honoured_by_prepare_and_predict(tmp_path):
    from _helpers import make_checkpoint
    from surgflow.data.store import PreparedDataset
    from surgflow.online.predict import predict_video
    from surgflow.online.predictor import OnlinePredictor

    root = tmp_path / "raw"
    (root / "videos").mkdir(parents=True)
    _write_video(root / "videos" / "video01.mp4", 75, size=(48, 64), rotation=90)  # 3 s
    _cholec_raw(root, 75)
    size = (64, 48)  # portrait, as displayed
    res = prepare("cholec80", root, tmp_path / "out", fps=1.0, size=size)
    assert not res.failed, res.failed
    e = res.manifest["videos"]["video01"]
    assert e["rotation"] == 90 and any("rotated 90 degrees" in n for n in e["notes"])
    frames = PreparedDataset(tmp_path / "out").read_frames("video01", 0, 3)
    # coded top-left block, rotated 90 degrees counter-clockwise -> bottom-left when displayed
    assert frames[0, -8:, :8].mean() > 200 and frames[0, :8, :8].mean() < 100

    seen = []
    pred = OnlinePredictor.from_checkpoint(make_checkpoint(tmp_path / "m.pt", size=size))
    step = pred.step
    pred.step = lambda rgb: (seen.append(rgb.copy()), step(rgb))[1]
    notes = []
    predict_video(pred, root / "videos" / "video01.mp4", tmp_path / "pred", log=notes.append)
    assert any("rotated 90 degrees" in n for n in notes)
    np.testing.assert_array_equal(np.stack(seen)[:3], frames)  # predict sees the stored frames


# ------------------------------------------------------------------------------------------
# Issue 21, data side: nothing silent, nothing lost
# ------------------------------------------------------------------------------------------
def test_failed_redo_keeps_the_earlier_prepared_data(small, capsys):
    from surgflow.data.store import PreparedDataset

    raw, out = small
    before = json.loads((out / "manifest.json").read_text())["videos"]["video01"]
    frames = PreparedDataset(out).read_frames("video01", 0, 5)
    good = raw / "videos" / "video01.mp4"
    saved = good.read_bytes()
    good.write_bytes(os.urandom(30000))  # the new source is corrupt: its redo fails
    res = prepare("cholec80", raw, out, fps=1.0, size=SIZE)
    assert list(res.failed) == ["video01"] and "size" in res.redone["video01"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["videos"]["video01"] == before and "video01" in m["failed"]  # entry and data kept
    assert not list(out.glob(".tmp-*"))
    from surgflow.data.store import DatasetWarning

    with pytest.warns(DatasetWarning, match=r"video01: its last redo failed .*earlier prepared"):
        ds = PreparedDataset(out)
    np.testing.assert_array_equal(ds.read_frames("video01", 0, 5), frames)
    assert any(p.startswith("video01: failed to prepare (its earlier prepared data are kept)")
               for p in check(out))
    capsys.readouterr()
    good.write_bytes(os.urandom(30000))
    assert main(["prepare", "cholec80", str(raw), str(out), "--size", "56x32"]) == 1
    err = capsys.readouterr()
    assert "video01: redo FAILED (see below), earlier prepared data kept" in err.out
    assert "earlier prepared data of this video are kept until a redo succeeds" in err.err
    # the good source back: nothing to redo, and the failure is forgotten
    good.write_bytes(saved)
    res = prepare("cholec80", raw, out, fps=1.0, size=SIZE)
    assert not res.failed and sorted(res.skipped) == ["video01", "video02"]
    assert json.loads((out / "manifest.json").read_text())["failed"] == {}
    assert check(out, "cholec80", raw) == []


def _fail_in_manifest(root: Path, video: str, why: str) -> None:
    """The state `prepare` leaves when `video` failed: no entry, no folder, a `failed` message."""
    m = json.loads((root / "manifest.json").read_text())
    del m["videos"][video]
    m["failed"] = {video: why}
    (root / "manifest.json").write_text(json.dumps(m))
    shutil.rmtree(root / video)


def test_failed_video_is_named_and_auto_split_keeps_membership(tiny_root, tmp_path):
    import warnings

    from surgflow.config import load_config
    from surgflow.data.store import PreparedDataset
    from surgflow.training.trainer import train

    full = PreparedDataset(tiny_root, split="auto").splits
    assert full == {"train": ["video01", "video02"], "val": ["video03"], "test": ["video04"]}
    root = tmp_path / "p"
    shutil.copytree(tiny_root, root)
    _fail_in_manifest(root, "video04", "raw/videos/video04.mp4: cannot open video")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = PreparedDataset(root, split="auto")
    # video03 stays in val (before: it moved to test, and val was empty)
    assert ds.splits == {"train": ["video01", "video02"], "val": ["video03"], "test": []}
    assert [w.category.__name__ for w in caught] == ["DatasetWarning"]
    msg = str(caught[0].message)
    assert "video04 (its place in the 'test' subset of split 'auto' stays empty" in msg
    assert "cannot open video" in msg and "surgflow prepare" in msg
    assert ds.missing == {"video04": "`surgflow prepare` failed for it: raw/videos/video04.mp4: "
                                     "cannot open video"}
    notes = []
    assert PreparedDataset(root, split="auto", subset="val", log=notes.append).videos == ["video03"]
    assert len(notes) == 1 and "video04" in notes[0]
    # training says it, in its log (stopped early by a batch size the data cannot fill)
    cfg = load_config(None, [f"data.root={root}", "data.split=auto", "model.backbone=test_convnext",
                             "model.hidden=8", "train.batch_size=9", "train.device=cpu"])
    with pytest.raises(SurgflowError, match="batch_size"):
        train(cfg, tmp_path / "run")
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "WARNING: 1 video(s) of" in log and "video04 (its place in the 'test' subset" in log
    # and what it trains on: the frame size and rate the dataset was prepared at (WxH on screen)
    assert "2 train videos, 1 validation videos; frames 56x32 (WxH) at 1 fps" in log


def test_check_full_hash_catches_same_size_change_with_restored_mtime(synthetic_raw, tmp_path,
                                                                     monkeypatch, capsys):
    import surgflow.data.sources as sources

    # the cheap fingerprint hashes 1 MiB at each end; 4 KiB here puts a gap into a small video
    monkeypatch.setattr(sources, "EDGE", 4096)
    raw = _raw_subset(synthetic_raw, tmp_path / "raw", ("video01",))
    out = tmp_path / "out"
    assert prepare("cholec80", raw, out, fps=1.0, size=SIZE).done == ["video01"]
    video = raw / "videos" / "video01.mp4"
    st = video.stat()
    data = bytearray(video.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    video.write_bytes(bytes(data))
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` / `rsync -a` leave it
    assert check(out, "cholec80", raw) == []  # size, mtime and both ends agree
    problems = check(out, "cholec80", raw, full_hash=True)
    assert len(problems) == 1
    assert "video01.mp4: content changed (full-file sha256 differs" in problems[0]
    assert "same size and mtime" in problems[0]
    capsys.readouterr()
    assert main(["prepare", "cholec80", str(raw), str(out), "--check", "--full-hash"]) == 1
    err = capsys.readouterr().err
    assert "full-file sha256 differs" in err and f"{out} --full-hash`" in err
    assert prepare("cholec80", raw, out, fps=1.0, size=SIZE).skipped == ["video01"]
    res = prepare("cholec80", raw, out, fps=1.0, size=SIZE, full_hash=True)
    assert "full-file sha256 differs" in res.redone["video01"]
    assert check(out, "cholec80", raw, full_hash=True) == []


def test_disk_full_during_prepare_names_folder_and_free_space(synthetic_raw, tmp_path,
                                                              monkeypatch, capsys):
    import errno

    from surgflow.data import prepare as prep

    raw = _raw_subset(synthetic_raw, tmp_path / "raw")
    out = tmp_path / "out"
    real_save = prep._save_npy

    def full_after_first(path, arr):
        if path.parent.name.startswith(".tmp-video02"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, arr)

    monkeypatch.setattr(prep, "_save_npy", full_after_first)
    with pytest.raises(SurgflowError, match=rf"disk full while writing {out} \(No space left on "
                       r"device; [\d.]+ GB free on that file system\); the 1 video\(s\) finished "
                       r"before are kept .*re-run the same command to resume"):
        prepare("cholec80", raw, out, fps=1.0, size=SIZE)
    m = json.loads((out / "manifest.json").read_text())
    assert list(m["videos"]) == ["video01"] and m["failed"] == {}  # not the video's fault
    assert not list(out.glob(".tmp-*"))
    # the manifest write itself: the same message, from the CLI, exit 2, no traceback
    monkeypatch.setattr(prep, "_save_npy", real_save)

    def no_space(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prep, "atomic_write_json", no_space)
    capsys.readouterr()
    assert main(["prepare", "cholec80", str(raw), str(out), "--size", "56x32"]) == 2
    err = capsys.readouterr().err
    assert f"error: disk full while writing {out}" in err and "GB free" in err


def test_garbage_or_object_label_arrays_name_file_and_fix(tiny_root, tmp_path):
    from surgflow.data.store import PreparedDataset

    root = tmp_path / "p"
    shutil.copytree(tiny_root, root)
    (root / "video01" / "phase.npy").write_bytes(b"garbage, not numpy")
    n2 = json.loads((root / "manifest.json").read_text())["videos"]["video02"]["frames"]
    np.save(root / "video02" / "tools.npy", np.array([{"x": 1}] * n2, dtype=object),
            allow_pickle=True)
    np.save(root / "video03" / "phase.npy", np.zeros(3, np.float32))
    ds = PreparedDataset(root)
    with pytest.raises(SurgflowError, match=r"video01/phase\.npy: not a \.npy file .*video01 are "
                       r"damaged.*--check"):
        ds.phase("video01")
    with pytest.raises(SurgflowError, match=r"video02/tools\.npy: an object array .*--check"):
        ds.tools("video02")
    with pytest.raises(SurgflowError, match=r"video03/phase\.npy: float32 array of shape \(3,\), "
                       r"expected integers"):
        ds.phase("video03")
    problems = check(root)  # lists them instead of raising
    for v, what in (("video01", "phase.npy: not a .npy"), ("video02", "tools.npy: an object"),
                    ("video03", "phase.npy: float32")):
        assert any(p.startswith(f"{v}: ") and what in p for p in problems), (v, problems)


class _Frame:
    def __init__(self, pts):
        self.pts = pts


def _closest(times_ms, fps: int, n: int) -> list[int]:
    """Brute force, in exact integers (unit 1 / (1000 fps) s): the index of the frame closest to
    each target time i / fps, i < n (ties: the later frame)."""
    t = np.asarray(times_ms, np.int64) * fps
    d = np.abs(t[None, :] - 1000 * np.arange(n)[:, None])
    return [int(np.flatnonzero(row == row.min())[-1]) for row in d]


def test_sample_by_timestamp_takes_the_closest_frame_in_vfr_video():
    from surgflow.data.video import sample_by_timestamp

    rng = np.random.default_rng(0)
    pts = np.cumsum([0] + list(rng.choice([20, 40, 60], 119)))  # ms: a variable-rate recording
    frames = [_Frame(int(p)) for p in pts]
    rate = Fraction(len(pts) - 1, int(pts[-1])) * 1000  # the average rate PyAV reports
    index = {id(f): k for k, f in enumerate(frames)}
    for fps in (1, 5, 10, 30):
        got = list(sample_by_timestamp(frames, Fraction(1, 1000), rate, fps))
        assert [i for i, _ in got] == list(range(len(got)))
        assert [index[id(f)] for _, f in got] == _closest(pts, fps, len(got)), fps
        # the last frame serves the targets up to half a nominal interval after it
        end = Fraction(int(pts[-1]), 1000) + 1 / (2 * rate)
        assert Fraction(len(got) - 1, fps) < end <= Fraction(len(got), fps)
        seen = []
        list(sample_by_timestamp(frames, Fraction(1, 1000), rate, fps, on_frame=seen.append))
        assert seen == frames  # every frame, in order
    # on_frame runs for a frame before the targets it serves are yielded
    order = []
    for i, f in sample_by_timestamp(frames[:30], Fraction(1, 1000), rate, 10.0,
                                    on_frame=lambda f: order.append(("frame", f.pts))):
        order.append(("target", f.pts))
    for j, (kind, p) in enumerate(order):
        if kind == "target":
            assert ("frame", p) in order[:j] and order[j - 1][1] <= p


def test_sample_by_timestamp_constant_rate_unchanged():
    from surgflow.data.video import sample_by_timestamp

    # 25 fps, time base 1/12800 (512 per frame): ties at 2 fps (0.5 s between frames 12 and 13)
    frames = [_Frame(512 * k) for k in range(100)]
    for fps in (1, 2, 5, 25, 30):
        got = [frames.index(f) for _, f in sample_by_timestamp(frames, Fraction(1, 12800), 25, fps)]
        assert got == _closest(40 * np.arange(100), fps, len(got)), fps
    assert [frames.index(f) for _, f in
            sample_by_timestamp(frames, Fraction(1, 12800), 25, 1.0)] == [25 * i for i in range(4)]
    at_2fps = sample_by_timestamp(frames, Fraction(1, 12800), 25, 2.0)
    assert [frames.index(f) for _, f in at_2fps][:3] == [0, 13, 25]  # tie at 0.5 s: the later
    # no timestamps: frame k is at k / rate
    nopts = [_Frame(None) for _ in range(100)]
    assert [nopts.index(f) for _, f in sample_by_timestamp(nopts, None, 25, 1.0)] == [0, 25, 50, 75]


def test_eval_names_missing_videos_in_its_protocol_notes(tiny_root, tmp_path):
    """`surgflow eval` on a store with a failed video says which video is missing and why, in the
    scores' protocol notes (read later) rather than as a Python warning (lost off a terminal)."""
    import warnings

    from _helpers import make_checkpoint

    from surgflow.evaluation.runner import evaluate_run

    root = tmp_path / "p"
    shutil.copytree(tiny_root, root)
    _fail_in_manifest(root, "video04", "raw/videos/video04.mp4: cannot open video")
    ckpt = make_checkpoint(tmp_path / "c.pt", size=(32, 56), fps=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DatasetWarning would fail here
        res = evaluate_run(ckpt, split="train", data_root=root, out=tmp_path / "ev", device="cpu",
                           plots=False, quiet=True)
    notes = res["scores"]["phase"]["protocol"]["notes"]
    assert any("video04" in n and "cannot open video" in n for n in notes), notes


def test_audio_only_file_is_refused_naming_file_and_fix(tmp_path):
    """A readable container with no video stream (an audio track saved as .mp4) gets its own
    message, not a decode error later."""
    import av

    from surgflow.data.video import open_video

    path = tmp_path / "video01.mp4"
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    with pytest.raises(SurgflowError) as err:
        open_video(path)
    msg = str(err.value)
    assert str(path) in msg and "no video stream" in msg and "re-encode" in msg
