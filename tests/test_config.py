"""Typed config: YAML loading, dotted overrides, errors naming the key; every preset loads."""
from __future__ import annotations


import pytest

from surgflow.config import ConfigError, load_config, to_yaml
from surgflow.io_utils import SurgflowError

from surgflow.config import PRESET_DIR as CONFIGS  # surgflow/configs/, shipped in the wheel


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_and_overrides(tmp_path):
    p = _write(tmp_path, "model:\n  backbone: convnext_tiny\ntrain:\n  lr: 1e-5\n  seq_len: 64\n")
    cfg = load_config(p, ["train.lr=1e-4", "train.batch_size=4", "task.tasks=[phase,tools]",
                          "model.pretrained=false"])
    assert cfg.model.backbone == "convnext_tiny"
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 4 and cfg.train.seq_len == 64
    assert cfg.task.tasks == ["phase", "tools"]
    # the resolved YAML round-trips
    again = load_config(_write(tmp_path, to_yaml(cfg)))
    assert again == cfg


def test_unknown_key_names_the_key(tmp_path):
    with pytest.raises(SurgflowError, match=r"train\.sequence_len"):
        load_config(_write(tmp_path, "train:\n  sequence_len: 64\n"))
    with pytest.raises(ConfigError, match=r"model\.hiden"):
        load_config(None, ["model.hiden=3"])


def test_bad_value_and_choice(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.seq_len: expected int, got 'abc'"):
        load_config(None, ["train.seq_len=abc"])
    with pytest.raises(ConfigError, match=r"train\.seq_len: must be > 0"):
        load_config(None, ["train.seq_len=0"])
    with pytest.raises(ConfigError, match=r"train\.strategy: 'shuffle' is not one of"):
        load_config(_write(tmp_path, "train:\n  strategy: shuffle\n"))
    with pytest.raises(ConfigError, match="unknown task 'segmentation'"):
        load_config(None, ["task.tasks=[segmentation]"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_every_preset_loads():
    presets = sorted(CONFIGS.glob("*.yaml"))
    names = {p.stem for p in presets}
    for required in ("cholec80_phase_convnext_lstm", "cholec80_phase_convnext_lstm_frozen_t256",
                     "cholec80_phase_resnet50_bn", "cholec80_phase_resnet50_gn",
                     "cholec80_phase_nfnet_l0", "cholec80_anticipation_h3",
                     "cholec80_anticipation_h5", "autolaparo_phase", "synthetic_phase_tiny",
                     "synthetic_anticipation_tiny"):
        assert required in names, f"surgflow/configs/{required}.yaml missing"
    for p in presets:
        cfg = load_config(p)
        assert cfg.name == p.stem, f"{p.name}: name should be the file stem"
        assert p.read_text().lstrip().startswith("#"), f"{p.name}: needs a comment header"
        assert cfg.data.val_subset, f"{p.name}: checkpoints must be selected on validation"
    paper = load_config(CONFIGS / "cholec80_phase_convnext_lstm.yaml")
    assert (paper.model.backbone, paper.model.head, paper.model.hidden) == ("convnext_tiny", "lstm", 512)
    assert (paper.train.strategy, paper.train.seq_len, paper.train.batch_size) == ("carry_hidden", 64, 1)
    assert (paper.train.optimizer, paper.train.lr, paper.train.weight_decay, paper.train.epochs) == \
        ("adamw", 1e-5, 1e-2, 200)
    assert paper.data.split == "cholec80_32_8_40"
    nf = load_config(CONFIGS / "cholec80_phase_nfnet_l0.yaml")
    assert nf.train.optimizer == "sgd" and nf.train.agc == pytest.approx(0.1)
    for h in (3, 5):
        a = load_config(CONFIGS / f"cholec80_anticipation_h{h}.yaml")
        assert a.task.tasks == ["anticipation"] and a.task.horizon == h and a.train.epochs == 300
        assert len(a.task.instruments) == 5 and a.data.split == "cholec80_anticipation"
        assert a.train.best_metric == "val/wMAE"


@pytest.mark.parametrize("text, line, first", [
    ("name: a\ntrain:\n  epochs: 4\n  lr: 1.0e-3\n  epochs: 40\n", 5, 3),  # inside a section
    ("train:\n  epochs: 4\nname: a\ntrain:\n  lr: 1.0e-3\n", 4, 1),      # a whole section twice
])
def test_duplicate_yaml_key_is_refused_naming_the_line(tmp_path, text, line, first):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and f"line {line}:" in msg and f"first given on line {first}" in msg, msg


def test_duplicate_key_in_a_parent_config_names_the_parent(tmp_path):
    parent = tmp_path / "parent.yaml"
    parent.write_text("model:\n  hidden: 8\n  hidden: 16\n")
    child = _write(tmp_path, "extends: parent.yaml\nname: child\n")
    with pytest.raises(ConfigError, match=r"parent\.yaml: line 3: duplicate key 'hidden'"):
        load_config(child)


def test_override_typo_is_blamed_on_the_command_line_not_the_file(tmp_path, capsys):
    from surgflow.cli import main

    p = _write(tmp_path, "train:\n  epochs: 2\n")
    for bad, key in (("train.epohcs=2", "train.epohcs"), ("train.optimizer=adam", "train.optimizer")):
        with pytest.raises(ConfigError) as e:
            load_config(p, ["train.lr=1e-3", bad])
        msg = str(e.value)
        assert msg.startswith(f"command-line override --set {bad}: ") and key in msg, msg
        assert str(p) not in msg and "train.lr=1e-3" not in msg, msg
        assert main(["configs", "synthetic_phase_tiny", "--set", bad]) == 2
        err = capsys.readouterr().err
        assert f"--set {bad}" in err and "synthetic_phase_tiny.yaml" not in err, err
    # a bad value written in the file is still the file's
    p = _write(tmp_path, "train:\n  optimizer: adam\n")
    with pytest.raises(ConfigError, match=rf"^{p}: train.optimizer"):
        load_config(p, ["train.lr=1e-3"])
