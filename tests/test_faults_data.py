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
