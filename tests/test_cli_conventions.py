"""One set of flag conventions over every subcommand: help text on every flag, no '(default: None)',
positionals in UPPER_CASE, WIDTHxHEIGHT sizes through one parser, --device auto, --checkpoint."""
from __future__ import annotations

import argparse

import pytest
import yaml

from surgflow import cli
from surgflow.cli_args import check_orientation, parse_size, resolve_device
from surgflow.io_utils import SurgflowError


def _all_parsers():
    """(name, parser) of every subcommand, nested ones included: `surgflow score TASK`'s parser of
    every task with a file scorer (built when the task is named)."""
    from surgflow.commands import score

    todo = [("surgflow", cli.build_parser())]
    todo += [(f"surgflow score {t}", score.task_parser(t)) for t in score.scorable_tasks()]
    while todo:
        name, parser = todo.pop()
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend((f"{name} {n}", p) for n, p in action.choices.items())


def _sub(name):
    return dict(_all_parsers())[f"surgflow {name}"]


def test_every_flag_has_help_and_no_default_none():
    seen = 0
    for name, parser in _all_parsers():
        text = parser.format_help()
        assert "(default: None)" not in text, name
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction._ChoicesPseudoAction)):
                continue
            seen += 1
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS and len(action.help) > 5, label
            if action.required and action.option_strings:
                # a required flag's help line carries no default at all
                assert "(default:" not in parser._get_formatter()._get_help_string(action), label
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                metavar = action.metavar or action.dest
                assert metavar == metavar.upper(), f"{label}: positional metavar {metavar!r}"
    assert seen > 60  # every command was walked


def test_commands_all_registered_and_broken_module_is_not_hidden(monkeypatch):
    names = {n.split()[1] for n, _ in _all_parsers() if n.count(" ") == 1}
    assert names == {c for c, _ in cli.COMMANDS}
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [("nosuchcommand", "broken")])
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()  # a command module that fails to import is an error, not a missing command


@pytest.mark.parametrize("text,hw", [("384x216", (216, 384)), ("112X64", (64, 112)), (" 64 x 48 ", (48, 64))])
def test_size_is_width_by_height(text, hw):
    assert parse_size(text) == hw


@pytest.mark.parametrize("text", ["64", "64x", "x64", "64,112", "64x112x3", "0x64", "-4x8", "a x b", ""])
def test_bad_sizes_are_refused(text):
    with pytest.raises(SurgflowError, match="WIDTHxHEIGHT|>= 1"):
        parse_size(text)


def test_every_size_flag_uses_the_shared_parser(capsys):
    with_size = [n for n, p in _all_parsers()
                 if any("--size" in a.option_strings for a in p._actions)]
    assert {"surgflow prepare", "surgflow audit", "surgflow synth"} <= set(with_size)
    for name in with_size:
        p = dict(_all_parsers())[name]
        action = next(a for a in p._actions if "--size" in a.option_strings)
        assert action.metavar == "WxH" and "WIDTHxHEIGHT" in action.help, name
        assert action.type("112x64") == (64, 112), name
    # bad text is a usage error (exit 2) that names the flag, for every command
    assert cli.main(["prepare", "cholec80", "a", "b", "--size", "384"]) == 2
    assert "--size" in capsys.readouterr().err
    assert cli.main(["synth", "out", "--size", "33x20"]) == 2  # odd: video encoders need even sizes
    assert "even" in capsys.readouterr().err


def test_audit_refuses_a_sideways_size(tmp_path, capsys):
    # default model frames are 384x216 (W x H); 64x112 is that shape turned sideways (HxW typed)
    with pytest.raises(SurgflowError, match="did you mean 112x64"):
        check_orientation((112, 64), (216, 384))
    check_orientation((64, 112), (216, 384))  # the right order passes
    check_orientation((64, 64), (64, 64))  # square frames: either order is the same
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"backbone": "test_convnext", "hidden": 8}}))
    assert cli.main(["audit", str(cfg), "--size", "64x112"]) == 2
    assert "did you mean 112x64" in capsys.readouterr().err
    assert cli.main(["audit", str(cfg), "--size", "64x32", "--mode", "eval"]) == 0


def test_device_defaults_to_auto():
    for name in ("eval", "predict", "audit", "experiment"):
        p = _sub(name)
        assert next(a for a in p._actions if "--device" in a.option_strings).default == "auto", name
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(SurgflowError, match="expected auto, cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SurgflowError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_one_checkpoint_flag_with_the_old_spelling_deprecated(capsys):
    for name, positionals in (("eval", ["run"]), ("predict", ["run", "v.mp4"]), ("export", ["run"]),
                              ("audit", ["c.yaml"])):
        p = _sub(name)
        extra = ["--onnx", "m.onnx"] if name == "export" else []
        assert p.parse_args(positionals + extra).checkpoint == "kept"
        assert p.parse_args(positionals + extra + ["--checkpoint", "last"]).checkpoint == "last"
        assert capsys.readouterr().err == ""
        assert p.parse_args(positionals + extra + ["--which", "last"]).checkpoint == "last"
        assert "--which is deprecated; use --checkpoint" in capsys.readouterr().err


def test_printed_next_commands_are_shell_quoted(tmp_path, monkeypatch, capsys):
    """The "next:" line of synth and train pastes into a shell as is, spaces in the path included."""
    import shlex

    import surgflow.data.synth
    import surgflow.training.trainer

    monkeypatch.setattr(surgflow.data.synth, "synthesize", lambda *a, **k: [])
    raw = tmp_path / "my raw data"
    assert cli.main(["synth", str(raw), "--videos", "1"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("next: ")]
    assert shlex.split(line[6:])[:4] == ["surgflow", "prepare", "cholec80", str(raw)], line

    run = tmp_path / "run a"
    monkeypatch.setattr(surgflow.training.trainer, "train", lambda cfg, out, **k: {
        "best_metric": {}, "stopped": "done", "step": 1, "epoch": 1, "train": {}, "val": {},
        "last": str(out / "checkpoints/last.pt"), "best": str(out / "checkpoints/best.pt")})
    assert cli.main(["train", "synthetic_phase_tiny", "--out", str(run)]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("next: ")]
    assert shlex.split(line[6:]) == ["surgflow", "eval", str(run)], line


class _Store:
    """A prepared store as evaluate_run reads it: one 6-frame video at `fps` and (H, W) `size`."""

    def __init__(self, fps, size):
        import numpy as np

        from surgflow.labels import CHOLEC80_PHASES, CHOLEC80_TOOLS

        self.fps, self.size, self.videos = float(fps), tuple(size), ["video01"]
        self.phase_names, self.tool_names = list(CHOLEC80_PHASES), list(CHOLEC80_TOOLS)
        self._frames = np.random.default_rng(0).integers(0, 256, (6, *size, 3), dtype=np.uint8)

    def num_frames(self, v):
        return 6

    def read_frames(self, v, start, stop):
        return self._frames[start:stop]

    def phase(self, v):
        import numpy as np

        return np.array([0, 0, 1, 1, 2, 2])

    def tools(self, v):
        import numpy as np

        return (np.arange(6 * 7).reshape(6, 7) % 3 == 0).astype(np.float32)

    def anticipation(self, v, horizon, instruments):
        from surgflow.data.targets import anticipation_targets

        cols = [self.tool_names.index(i) for i in instruments]
        return anticipation_targets(self.tools(v)[:, cols] > 0.5, self.fps, horizon)


def _fake_store(monkeypatch, fps, size):
    import surgflow.data.store

    monkeypatch.setattr(surgflow.data.store, "PreparedDataset",
                        lambda root, split="all", subset=None, **_kw: _Store(fps, size))


@pytest.mark.parametrize("store_fps, store_size, expect", [
    (5.0, (32, 56), ["5 fps (the run: 1 fps)", "--fps 1"]),            # 1-fps model, 5-fps store
    (1.0, (64, 64), ["64x64 frames (the run: 56x32)", "--size 56x32"]),  # another frame size
])
def test_eval_refuses_a_store_at_another_rate_or_size(tmp_path, monkeypatch, capsys,
                                                      store_fps, store_size, expect):
    from _helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "c.pt", size=(32, 56), fps=1.0)
    _fake_store(monkeypatch, store_fps, store_size)
    out = tmp_path / "ev"
    assert cli.main(["eval", str(ckpt), "--data-root", str(tmp_path / "store"), "--split", "train",
                     "--out", str(out), "--device", "cpu", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert all(e in err for e in expect) and "--data-root" in err, err
    assert not (out / "predictions" / "fps.json").exists()
    # a store like the run's is evaluated, and fps.json carries the store's rate
    _fake_store(monkeypatch, 1.0, (32, 56))
    assert cli.main(["eval", str(ckpt), "--data-root", str(tmp_path / "store"), "--split", "train",
                     "--out", str(out), "--device", "cpu", "--no-plots"]) == 0
    import json

    assert json.loads((out / "predictions" / "fps.json").read_text())["fps"] == 1.0


def test_eval_disk_full_while_plotting_is_a_message(tmp_path, monkeypatch, capsys):
    import errno

    from _helpers import make_checkpoint

    from surgflow.evaluation import plots

    ckpt = make_checkpoint(tmp_path / "c.pt", size=(32, 56), fps=1.0)
    _fake_store(monkeypatch, 1.0, (32, 56))

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", f"{path.parent}/.{path.name}.x1.tmp")

    monkeypatch.setattr(plots, "atomic_write_bytes", full)
    out = tmp_path / "ev"
    assert cli.main(["eval", str(ckpt), "--data-root", str(tmp_path / "store"), "--split", "train",
                     "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"disk full while writing {out / 'plots'}/ribbon_video01.png" in err, err
    assert "GB free" in err and "Traceback" not in err, err


def test_eval_prints_shell_quoted_commands(tmp_path, monkeypatch, capsys):
    """The re-score and view commands that eval prints paste into a shell, spaces included."""
    import shlex

    from _helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "c.pt", size=(32, 56), fps=1.0)
    _fake_store(monkeypatch, 1.0, (32, 56))
    out = tmp_path / "my eval"
    assert cli.main(["eval", str(ckpt), "--data-root", str(tmp_path / "store"), "--split", "train",
                     "--out", str(out), "--device", "cpu", "--no-plots"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (rescore,) = [ln.split("re-score with: ", 1)[1] for ln in lines if "re-score with: " in ln]
    words = shlex.split(rescore)
    assert words[words.index("--gt") + 1] == str(out / "ground_truth"), rescore
    assert words[words.index("--pred") + 1] == str(out / "predictions"), rescore
    (view,) = [ln.split("frames: ", 1)[1] for ln in lines if "browse predictions" in ln]
    assert shlex.split(view) == ["surgflow", "view", str(out)], view
