"""`surgflow view`: the HTML page of a split's predictions, driven in a real headless Chromium.

The page is made from tiny runs (untrained tiny models saved through the real checkpoint API)
that the real `surgflow eval` code evaluates on the 4 videos of the 32x56 session store. The
browser is Debian's chromium (`.ci/run` installs it) driven by Playwright for Python
(`executable_path`, never `playwright install`). A missing browser or Playwright fails these
tests, it does not skip them. Screenshots are saved under the test's
tmp dir and copied to $SURGFLOW_TEST_ARTIFACTS when that is set.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from surgflow.cli import main
from surgflow.data.annotations import parse_phase_file
from surgflow.io_utils import SurgflowError

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _chromium() -> str:
    path = os.environ.get("SURGFLOW_CHROMIUM") or next(
        (p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None) or shutil.which("chromium")
    if not path or not Path(path).is_file():
        pytest.fail(f"{path or 'chromium'}: not found; install Debian's `chromium` (apt-get "
                    f"install chromium; .ci/run does) or point SURGFLOW_CHROMIUM at one: the "
                    f"viewer tests need a real browser")
    return path


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A browser tab that records console errors and uncaught exceptions."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, html: Path):
        self.page.goto(html.resolve().as_uri())
        self.page.wait_for_selector("#videos tbody tr")
        return self.page


@pytest.fixture
def tab(browser):
    t = Page(browser)
    yield t
    t.page.close()


def _screenshot(page, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    if os.environ.get("SURGFLOW_TEST_ARTIFACTS"):
        dest = Path(os.environ["SURGFLOW_TEST_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / path.name)
    return path


def _run_and_eval(root, run: Path, seed: int) -> Path:
    """A tiny run folder (an untrained model through the real checkpoint API, tests/_helpers.py)
    evaluated by the real eval on the store's 4 videos (split `all`: every video in train)."""
    from _helpers import make_checkpoint

    from surgflow.evaluation.runner import evaluate_run

    make_checkpoint(run / "checkpoints" / "best.pt", seed=seed)
    return Path(evaluate_run(run, split="train", plots=False, quiet=True, data_root=root)["out"])


@pytest.fixture(scope="module")
def evals(tiny_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("viewer_runs")
    return _run_and_eval(tiny_root, base / "run_a", 0), _run_and_eval(tiny_root, base / "run_b", 1)


@pytest.fixture(scope="module")
def one_page(evals, tmp_path_factory):
    out = tmp_path_factory.mktemp("view_one")
    assert main(["view", str(evals[0]), "--out", str(out)]) == 0
    return out / "index.html"


def _file_labels(eval_dir: Path, kind: str, video: str) -> dict[int, str]:
    mapping = (eval_dir / "ground_truth" / "mapping.txt").read_text()
    names = [ln.split(" ", 1)[1] for ln in mapping.splitlines()]
    frames, ids = parse_phase_file(eval_dir / kind / f"{video}-phase.txt", names)
    return {int(f): names[i] for f, i in zip(frames, ids)}


def _file_segments(labels: dict[int, str]) -> int:
    """Runs of one phase over consecutive frames of a prediction file."""
    n, prev = 0, None
    for f in sorted(labels):
        if prev is None or f != prev[0] + 1 or labels[f] != prev[1]:
            n += 1
        prev = (f, labels[f])
    return n


def test_eval_records_what_the_page_needs(evals, capsys):
    """eval writes every frame's phase probabilities and the store it read, and names the command."""
    ev = evals[0]
    doc = json.loads((ev / "scores.json").read_text())
    assert Path(doc["data_root"], "manifest.json").is_file()
    probs = sorted((ev / "predictions").glob("*-phase_prob.txt"))
    assert [p.name for p in probs] == [f"video0{i}-phase_prob.txt" for i in (1, 2, 3, 4)]
    rows = np.loadtxt(probs[0], skiprows=1)[:, 1:]
    np.testing.assert_allclose(rows.sum(1), 1.0, atol=5e-3)  # [N, P] probabilities
    from surgflow.evaluation.runner import evaluate_run

    evaluate_run(ev.parent, split="train", out=ev.parent / "again", plots=False,
                 data_root=doc["data_root"])
    assert f"surgflow view {ev.parent / 'again'}" in capsys.readouterr().out


@pytest.mark.slow
def test_page_loads_without_errors_and_sorts(one_page, tab, capsys):
    """No console error; the overview lists every video; a header click changes the sort order."""
    page = tab.open(one_page)
    rows = lambda: page.eval_on_selector_all("#videos tbody tr", "rs => rs.map(r => r.dataset.video)")
    frames = {v["name"]: v["n"] for v in page.evaluate("window.surgflowView.data.videos")}
    assert rows() == ["video01", "video02", "video03", "video04"] and len(set(frames.values())) > 1
    page.click("#videos th[data-key=n]")  # frames, largest first
    first = rows()
    assert first == sorted(frames, key=lambda v: -frames[v])
    page.click("#videos th[data-key=n]")  # again: smallest first
    second = rows()
    assert second == sorted(frames, key=lambda v: frames[v]) and second != first
    assert "\u25B2" in page.inner_text("#videos th[data-key=n]")
    assert page.locator("table.confusion").count() == 1 and page.locator("#per-phase tr").count() == 8
    _screenshot(page, one_page.parent / "viewer_overview.png")
    assert tab.errors == []


@pytest.mark.slow
def test_ribbon_has_the_prediction_files_segments(evals, one_page, tab):
    page = tab.open(one_page)
    for video in ("video01", "video02"):
        page.evaluate(f"window.surgflowView.open('{video}', 0)")
        pred = _file_labels(evals[0], "predictions", video)
        gt = _file_labels(evals[0], "ground_truth", video)
        assert page.locator("#ribbon-pred-0 rect.seg").count() == _file_segments(pred)
        assert page.locator("#ribbon-gt rect.seg").count() == _file_segments(gt)
    assert tab.errors == []


@pytest.mark.slow
def test_click_at_time_t_shows_frame_t_with_its_labels(evals, one_page, tab, tmp_path):
    page = tab.open(one_page)
    page.click("#videos tbody tr[data-video=video02]")
    n = page.evaluate("window.surgflowView.data.videos[1].n")
    pred = _file_labels(evals[0], "predictions", "video02")
    gt = _file_labels(evals[0], "ground_truth", "video02")
    for track in ("#ribbon-gt", "#prob-0", "#ant-0"):
        box = page.locator(track).bounding_box()
        t = int(n * 0.6) if track == "#ribbon-gt" else int(n * 0.3)
        page.mouse.click(box["x"] + box["width"] * (t + 0.5) / n, box["y"] + box["height"] / 2)
        page.wait_for_function("document.getElementById('frame').complete")
        assert page.get_attribute("#frame", "src") == f"frames/video02/{t:06d}.jpg"
        assert page.evaluate("document.getElementById('frame').naturalWidth") > 0  # the file loaded
        assert page.get_attribute("#frame-time", "data-frame") == str(t)
        assert f"0:00:{t:02d}" in page.inner_text("#frame-time")  # 1 fps: frame t = t seconds
        assert page.get_attribute("#frame-gt", "data-phase") == gt[t]
        assert page.get_attribute("#frame-pred-0", "data-phase") == pred[t]
    page.keyboard.press("ArrowRight")  # keys step frame by frame
    assert page.get_attribute("#frame-time", "data-frame") == str(t + 1)
    page.keyboard.press("Shift+ArrowLeft")
    assert page.get_attribute("#frame-time", "data-frame") == str(t + 1 - 10)
    # drag along the ground-truth ribbon: the frame follows the pointer
    box = page.locator("#ribbon-gt").bounding_box()
    y = box["y"] + 5
    page.mouse.move(box["x"] + 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * (n - 2.5) / n, y, steps=5)
    page.mouse.up()
    assert page.get_attribute("#frame-time", "data-frame") == str(n - 3)
    # the disagreement list: a click jumps to the stretch's first frame
    items = page.locator("#errors-0 li")
    assert items.count() > 0  # an untrained model disagrees with a 7-phase truth
    start = items.nth(items.count() - 1).get_attribute("data-start")
    items.nth(items.count() - 1).click()
    assert page.get_attribute("#frame-time", "data-frame") == start
    assert gt[int(start)] != pred[int(start)]
    lengths = lambda: [int(re.search(r"\((\d+) fr\)", x).group(1)) for x in items.all_inner_texts()]
    assert lengths() != [] and page.locator("#errors-order").input_value() == "time"
    page.select_option("#errors-order", "length")  # longest first
    assert lengths() == sorted(lengths(), reverse=True)
    page.evaluate("window.surgflowView.setFrame(%d)" % t)
    _screenshot(page, one_page.parent / "viewer_video.png")
    assert tab.errors == []


@pytest.mark.slow
def test_two_runs_side_by_side(evals, tab, tmp_path):
    """`surgflow view A B`: both runs' ribbons on the ground truth's time axis, both predictions
    shown at the clicked frame."""
    out = tmp_path / "ab"
    assert main(["view", str(evals[0]), str(evals[1]), "--out", str(out), "--names", "BN-free,BN"]) == 0
    page = tab.open(out / "index.html")
    assert page.locator("#videos th").all_inner_texts()[3:5] == ["A accuracy (%)", "A F1 (%)"]
    page.click("#videos tbody tr[data-video=video01]")
    gt_box = page.locator("#ribbon-gt").bounding_box()
    for k, ev in enumerate(evals):
        box = page.locator(f"#ribbon-pred-{k}").bounding_box()
        assert (box["x"], box["width"]) == (gt_box["x"], gt_box["width"])  # one time axis
        pred = _file_labels(ev, "predictions", "video01")
        assert page.locator(f"#ribbon-pred-{k} rect.seg").count() == _file_segments(pred)
    n = page.evaluate("window.surgflowView.data.videos[0].n")
    t = n // 2
    page.mouse.click(gt_box["x"] + gt_box["width"] * (t + 0.5) / n, gt_box["y"] + 5)
    for k, ev in enumerate(evals):
        want = _file_labels(ev, "predictions", "video01")[t]
        assert page.get_attribute(f"#frame-pred-{k}", "data-phase") == want
    assert page.inner_text("#runs").count("BN-free") == 1
    _screenshot(page, tmp_path / "viewer_side_by_side.png")
    assert tab.errors == []


def test_demo_report_links_a_side_by_side_page(evals, tmp_path):
    """The demo report's viewer section: its seed's evaluations side by side, linked relatively."""
    from surgflow.experiments.demo_report import _viewer_section

    assert _viewer_section(tmp_path, 0) == []  # no evaluation folders: no section
    for name, ev in zip(("bn_free_seed0", "batchnorm_seed0"), evals):
        shutil.copytree(ev, tmp_path / "eval" / name)
    lines = _viewer_section(tmp_path, 0)
    assert any("[viewer/index.html](viewer/index.html)" in ln for ln in lines)
    html = (tmp_path / "viewer" / "index.html").read_text()
    data = json.loads(re.search(r'id="surgflow-data">(.*?)</script>', html, re.S).group(1))
    from surgflow.experiments.demo import row_title

    assert [r["name"] for r in data["runs"]] == [row_title("bn_free"), row_title("batchnorm")]


def test_page_is_self_contained(one_page):
    """No network: no http(s) URL is loaded by the page, frames are relative files."""
    html = one_page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script src" not in html and "<link" not in html
    frames = sorted((one_page.parent / "frames" / "video01").glob("*.jpg"))
    assert frames and frames[0].name == "000000.jpg"


def test_frames_from_the_source_video(evals, synthetic_raw, tiny_root, tmp_path, capsys):
    """--source: thumbnails decoded from the raw videos, at the store's times and size (the same
    picture as the store's frame, up to JPEG loss); an unreachable source is refused by name."""
    from surgflow.data.store import PreparedDataset
    from surgflow.data.store_format import decode_jpeg

    out = tmp_path / "src"
    assert main(["view", str(evals[0]), "--source", str(synthetic_raw), "--out", str(out)]) == 0
    assert "MB in all" in capsys.readouterr().out  # the size is logged
    ds = PreparedDataset(tiny_root)
    files = sorted((out / "frames" / "video02").glob("*.jpg"))
    assert len(files) == ds.num_frames("video02")
    t = len(files) // 2
    src = decode_jpeg(files[t].read_bytes()).astype(float)
    store = ds.read_frames("video02", t, t + 1)[0].astype(float)
    assert src.shape == store.shape
    others = [np.abs(ds.read_frames("video02", u, u + 1)[0] - src).mean() for u in (0, len(files) - 1)]
    assert np.abs(src - store).mean() < min(others)  # frame t, not another one
    assert main(["view", str(evals[0]), "--source", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "--source" in capsys.readouterr().err


def test_view_errors_name_the_fix(evals, tmp_path, capsys):
    run_dir = evals[0].parent
    with pytest.raises(SurgflowError, match=r"surgflow eval .* --split test"):
        from surgflow.evaluation.viewer import write_view

        write_view([run_dir], split="test")  # evaluated on train only
    assert main(["view", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["view", str(evals[0]), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_weakest_phase_and_segments_on_golden_sequences():
    """The overview's weakest phase is the ground-truth phase of lowest F1 (the first on a tie,
    compared unrounded); ribbon segments are the runs of the labels, unlabelled runs dropped."""
    import numpy as np

    from surgflow.evaluation.viewer import _segments, _weakest

    names = [f"p{i}" for i in range(7)]
    # F1 of p4 and p5 are both 2/3: a tie goes to the first
    assert _weakest(np.array([4, 5, 5]), np.array([4, 4, 5]), names) == ["p4", 66.7]
    # p1: tp 1 of (2 gt + 1 pred) -> 66.7; p2: tp 0 -> 0; p0 never in the ground truth
    assert _weakest(np.array([1, 1, 2, -1]), np.array([1, 0, 0, 3]), names) == ["p2", 0.0]
    assert _weakest(np.array([-1, -1]), np.array([0, 1]), names) is None
    assert _segments(np.array([2, 2, -1, -1, 3, 2])) == [[0, 2, 2], [4, 5, 3], [5, 6, 2]]
    assert _segments(np.array([], dtype=np.int64)) == []
