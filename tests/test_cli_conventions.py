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
    """(name, parser) of every subcommand, nested ones (score phase|tools|anticipation) included."""
    todo = [("surgflow", cli.build_parser())]
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
        assert p.parse_args(positionals + extra).checkpoint == "best"
        assert p.parse_args(positionals + extra + ["--checkpoint", "last"]).checkpoint == "last"
        assert capsys.readouterr().err == ""
        assert p.parse_args(positionals + extra + ["--which", "last"]).checkpoint == "last"
        assert "--which is deprecated; use --checkpoint" in capsys.readouterr().err
