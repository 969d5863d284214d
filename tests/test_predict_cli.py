"""`surgflow predict`: score-readable files, rendered overlay, truncated streams, bad input."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SURGFLOW_NO_PROGRESS", "1")

from surgflow.cli import main  # noqa: E402
from surgflow.evaluation.files import read_phase_pred, read_table  # noqa: E402
from surgflow.io_utils import SurgflowError  # noqa: E402
from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES, CHOLEC80_TOOLS  # noqa: E402

from _helpers import make_checkpoint  # noqa: E402






@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _count_frames(path) -> tuple[int, tuple[int, int]]:
    import av

    with av.open(str(path)) as c:
        frames = [f for f in c.decode(video=0)]
    return len(frames), (frames[0].height, frames[0].width)


@pytest.mark.slow
def test_predict_writes_score_readable_files_and_overlay(ckpt, synthetic_raw, tmp_path, capsys):
    video = Path(synthetic_raw) / "videos" / "video01.mp4"
    out, overlay = tmp_path / "pred", tmp_path / "overlay.mp4"
    rc = main(["predict", str(ckpt), str(video), "--out", str(out), "--render", str(overlay)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "video01: " in printed and "ms/frame" in printed
    labels = read_phase_pred(out / "video01-phase.txt", CHOLEC80_PHASES)
    n = len(labels)
    assert 30 <= n <= 41  # 30-40 s at 1 fps
    frames, tools = read_table(out / "video01-tool.txt", CHOLEC80_TOOLS, "tool")
    assert tools.shape == (n, 7) and ((tools >= 0) & (tools <= 1)).all()
    assert list(frames) == list(range(n))
    _, ant = read_table(out / "video01-anticipation.txt", ANTICIPATION_INSTRUMENTS, "anticipation")
    assert ant.shape == (n, 5) and ((ant >= 0) & (ant <= 3.0 + 1e-3)).all()
    # The overlay plays at the source rate: every decoded frame, even size, playable.
    count, (h, w) = _count_frames(overlay)
    source_frames, _ = _count_frames(video)
    assert count == source_frames and h % 2 == 0 and w == 640 and h > 360
    # `surgflow score phase` reads the files against the raw 25-fps annotations.
    gt = tmp_path / "gt"
    gt.mkdir()
    name = "video01-phase.txt"
    (gt / name).write_bytes((Path(synthetic_raw) / "phase_annotations" / name).read_bytes())
    rc = main(["score", "phase", "--gt", str(gt),
               "--pred", str(out), "--gt-fps", "25", "--fps", "1", "--truncate",
               "--json", str(tmp_path / "score.json")])
    assert rc == 0 and (tmp_path / "score.json").is_file()


def test_predict_records_its_rate_and_keeps_one_rate_per_folder(ckpt, synthetic_raw, tmp_path, capsys):
    """predict writes fps.json, so score reads the rate with no flag; a second rate in the same
    folder is refused before anything is decoded or overwritten."""
    import json

    video = Path(synthetic_raw) / "videos" / "video01.mp4"
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(video), "--out", str(out), "--fps", "5"]) == 0
    assert json.loads((out / "fps.json").read_text())["fps"] == 5.0
    n = len(read_phase_pred(out / "video01-phase.txt", CHOLEC80_PHASES))
    assert 150 <= n <= 205  # 30-40 s at 5 fps
    gt = tmp_path / "gt"
    gt.mkdir()
    name = "video01-phase.txt"
    (gt / name).write_bytes((Path(synthetic_raw) / "phase_annotations" / name).read_bytes())
    capsys.readouterr()
    assert main(["score", "phase", "--gt", str(gt), "--pred", str(out), "--gt-fps", "25",
                 "--truncate", "--json", str(tmp_path / "score.json")]) == 0
    protocol = json.loads((tmp_path / "score.json").read_text())["protocol"]
    assert protocol["fps"] == 5.0 and protocol["fps_source"] != "default", protocol
    before = (out / "video01-phase.txt").read_bytes()
    assert main(["predict", str(ckpt), str(video), "--out", str(out), "--fps", "1"]) != 0
    err = capsys.readouterr().err
    assert "fps.json" in err and "5 fps" in err and "--out" in err, err
    assert (out / "video01-phase.txt").read_bytes() == before  # nothing overwritten


def _remux_faststart(src, dst):
    """Copy the packets into an mp4 with the index first, so a truncated copy still opens."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", format="mp4",
                                         options={"movflags": "faststart"}) as o:
        s = i.streams.video[0]
        so = o.add_stream_from_template(s)
        for p in i.demux(s):
            if p.dts is None:
                continue
            p.stream = so
            o.mux(p)


def test_truncated_stream_keeps_predictions_so_far(ckpt, synthetic_raw, tmp_path, capsys):
    full = tmp_path / "full.mp4"
    _remux_faststart(Path(synthetic_raw) / "videos" / "video02.mp4", full)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    out, overlay = tmp_path / "pred", tmp_path / "cut_overlay.mp4"
    rc = main(["predict", str(ckpt), str(cut), "--out", str(out), "--render", str(overlay)])
    err = capsys.readouterr().err
    assert rc == 1 and "predictions made so far were written" in err
    n = len(read_phase_pred(out / "cut-phase.txt", CHOLEC80_PHASES))
    assert 5 <= n <= 30  # about half of a 30-40 s video
    _, ant = read_table(out / "cut-anticipation.txt", ANTICIPATION_INSTRUMENTS, "anticipation")
    assert len(ant) == n
    # the overlay was finalised and plays: about 25 source frames per 1-fps prediction
    assert 25 * (n - 1) <= _count_frames(overlay)[0] <= 25 * (n + 1)
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind


def test_bad_inputs_name_the_file(ckpt, tmp_path, capsys):
    from surgflow.data.video import open_video

    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    with pytest.raises(SurgflowError, match="notavideo.mp4"):
        open_video(str(bad))
    assert main(["predict", str(ckpt), str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "notavideo.mp4" in capsys.readouterr().err
    assert main(["predict", str(ckpt), str(tmp_path / "missing.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    offline = make_checkpoint(tmp_path / "bilstm.pt", head="bilstm", online=False)
    assert main(["predict", str(offline), str(bad)]) == 2
    assert "non-causal" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_stream_mode_prints_per_frame_latency(ckpt, synthetic_raw, tmp_path):
    from surgflow.online.predict import predict_video
    from surgflow.online.predictor import OnlinePredictor

    lines: list[str] = []
    res = predict_video(OnlinePredictor.from_checkpoint(ckpt),
                        str(Path(synthetic_raw) / "videos" / "video03.mp4"), tmp_path, live=True,
                        max_frames=5, name="live", log=lines.append)
    assert res["frames"] == 5 and res["stopped"] is None
    assert len(lines) == 5 and all(" ms" in ln for ln in lines) and lines[0].startswith("frame 0:")
    assert len(read_phase_pred(tmp_path / "live-phase.txt", CHOLEC80_PHASES)) == 5


def test_overlay_holds_predictions_at_the_source_rate(ckpt, synthetic_raw, tmp_path, capsys):
    """--render-at sampling gives one frame per prediction; the default plays at 25 fps with each
    prediction held, shows mm:ss, and --gt adds a ribbon that must fit the video."""
    import av

    from surgflow.online.render import OverlayRenderer, mmss

    assert (mmss(0), mmss(83.9), mmss(4500)) == ("00:00", "01:23", "75:00")
    video = Path(synthetic_raw) / "videos" / "video03.mp4"
    gt = Path(synthetic_raw) / "phase_annotations" / "video03-phase.txt"
    slides = tmp_path / "slides.mp4"
    assert main(["predict", str(ckpt), str(video), "--out", str(tmp_path / "p1"), "--render",
                 str(slides), "--render-at", "sampling", "--max-frames", "6"]) == 0
    assert _count_frames(slides)[0] == 6
    with av.open(str(slides)) as c:
        assert float(c.streams.video[0].average_rate) == 1.0
    held = tmp_path / "held.mp4"
    assert main(["predict", str(ckpt), str(video), "--out", str(tmp_path / "p2"), "--render",
                 str(held), "--gt", str(gt), "--max-frames", "6"]) == 0
    with av.open(str(held)) as c:
        assert float(c.streams.video[0].average_rate) == 25.0
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert 5 * 25 <= len(frames) <= 6 * 25 + 1  # 6 predictions held over ~25 source frames each
    # the panel changes within a held second (clock, video) but the ribbons only per prediction
    r = OverlayRenderer(tmp_path / "x.mp4", 25, ["A", "B"], [], 0.0, sample_fps=1,
                        gt=[0, 0, 1, 1], expected_frames=4)
    pred = {"frame": 0, "phase_prob": [0.9, 0.1], "phase_id": 0, "phase": "A", "confidence": 0.9}
    blank = np.zeros((90, 160, 3), np.uint8)
    a, b = r.draw(blank, pred, 0.0), r.draw(blank, pred, 1.5)
    assert r.timeline == [0]  # the same prediction held: not appended twice
    ribbon_y = r.video_h + 6 + r.row + 4  # inside the 'pred' ribbon
    x0 = 6 + 44  # ribbon start; prediction 0 fills the first quarter (before either cursor)
    assert (a[ribbon_y, x0 + 2:x0 + 100] == b[ribbon_y, x0 + 2:x0 + 100]).all()
    assert tuple(a[ribbon_y, x0 + 50]) == (31, 119, 180)  # phase A's colour
    assert not (a[r.video_h + 6:r.video_h + 20] == b[r.video_h + 6:r.video_h + 20]).all()  # clock
    gt_row = ribbon_y + 16
    x_late = r.width - 10  # the end of the video: ground truth phase B (colour 1) is drawn
    assert tuple(a[gt_row, x_late]) == (255, 127, 14)
    r.close(ok=False)
    # a ground-truth file at the wrong rate is refused with the fix
    assert main(["predict", str(ckpt), str(video), "--out", str(tmp_path / "p3"), "--render",
                 str(tmp_path / "bad.mp4"), "--gt", str(gt), "--gt-fps", "1"]) == 2
    assert "--gt" in capsys.readouterr().err
    assert main(["predict", str(ckpt), str(video), "--gt", str(gt)]) == 2
    assert "add --render" in capsys.readouterr().err


def test_render_disk_full_is_a_message_and_keeps_the_predictions(ckpt, synthetic_raw, tmp_path,
                                                                 monkeypatch, capsys):
    """ENOSPC while the overlay is written: not 'decoding stopped' or a traceback, but a disk-full
    message naming the overlay and free space; the predictions made are written, no temp file."""
    import errno

    from surgflow.online import render

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(render.OverlayRenderer, "write", full)
    video = Path(synthetic_raw) / "videos" / "video01.mp4"
    overlay = tmp_path / "ov" / "o.mp4"
    rc = main(["predict", str(ckpt), str(video), "--out", str(tmp_path / "pred"), "--render",
               str(overlay), "--max-frames", "3"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"disk full while writing {overlay}" in err and "free" in err, err
    assert "decoding stopped" not in err, err
    assert (tmp_path / "pred" / "video01-phase.txt").is_file()
    assert not overlay.exists() and not list(overlay.parent.glob(".*"))
