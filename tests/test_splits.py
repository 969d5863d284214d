import json

import pytest

from surgflow.data.splits import ANTICIPATION_FOLDS, SPLITS, resolve_split
from surgflow.io_utils import SurgflowError

CHOLEC = [f"video{i:02d}" for i in range(1, 81)]


def _ids(names):
    return [int(n[-2:]) for n in names]


def test_registry_names():
    for name in ["all", "auto", "cholec80_40_8_32", "cholec80_32_8_40", "cholec80_40_40",
                 "cholec80_anticipation", "autolaparo_10_4_7"]:
        assert name in SPLITS


def test_cholec80_named_splits():
    s = resolve_split("cholec80_40_8_32", CHOLEC)
    assert _ids(s["train"]) == list(range(1, 41))
    assert _ids(s["val"]) == list(range(41, 49))
    assert _ids(s["test"]) == list(range(49, 81))
    s = resolve_split("cholec80_32_8_40", CHOLEC)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (32, 8, 40)
    assert s["val"][0] == "video33" and s["test"][0] == "video41"
    s = resolve_split("cholec80_40_40", CHOLEC)
    assert s["val"] == [] and _ids(s["test"]) == list(range(41, 81))


def test_anticipation_folds():
    all_ids = sorted(i for f in ANTICIPATION_FOLDS for i in f)
    assert all_ids == list(range(1, 81))  # 4 disjoint folds of 20 covering 1..80
    s = resolve_split("cholec80_anticipation", CHOLEC)
    assert _ids(s["test"]) == sorted(ANTICIPATION_FOLDS[3])
    assert _ids(s["val"]) == sorted(ANTICIPATION_FOLDS[2])
    assert "video07" in s["test"] and "video01" in s["train"] and "video10" in s["val"]


def test_autolaparo_names_without_prefix():
    s = resolve_split("autolaparo_10_4_7", [f"{i:02d}" for i in range(1, 22)])
    assert s["train"][0] == "01" and s["val"] == ["11", "12", "13", "14"] and len(s["test"]) == 7


def test_missing_videos_are_listed():
    with pytest.raises(SurgflowError, match=r"13-80"):
        resolve_split("cholec80_40_8_32", CHOLEC[:12])
    with pytest.raises(SurgflowError, match="unknown split 'nope'.*auto"):
        resolve_split("nope", CHOLEC)


def test_all_and_auto():
    v = [f"video{i:02d}" for i in range(1, 13)]
    assert resolve_split("all", v) == {"train": v, "val": [], "test": []}
    s = resolve_split("auto", v[::-1])
    assert s["train"] == v[:7] and s["val"] == v[7:9] and s["test"] == v[9:]
    s = resolve_split("auto", v[:2])
    assert s["train"] == v[:1] and s["test"] == v[1:2]


def test_user_split_files(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("train: [video01, 2]\nval: [video03]\ntest: [video04]\n")
    s = resolve_split(str(y), CHOLEC[:4])
    assert s == {"train": ["video01", "video02"], "val": ["video03"], "test": ["video04"]}
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"train": ["video01"], "test": ["video09"]}))
    with pytest.raises(SurgflowError, match="video09"):
        resolve_split(str(j), CHOLEC[:4])
    j.write_text(json.dumps({"train": ["video01"], "test": ["video01"]}))
    with pytest.raises(SurgflowError, match="both train and test"):
        resolve_split(str(j), CHOLEC[:4])
    j.write_text(json.dumps({"train": ["video01"], "testing": []}))
    with pytest.raises(SurgflowError, match="unknown key"):
        resolve_split(str(j), CHOLEC[:4])


def test_mstcn_bundle(tmp_path):
    (tmp_path / "train.split1.bundle").write_text("a.txt\nb.txt\n")
    (tmp_path / "test.split1.bundle").write_text("c.txt\n")
    s = resolve_split(str(tmp_path / "test.split1.bundle"), ["a", "b", "c"])
    assert s == {"train": ["a", "b"], "val": [], "test": ["c"]}


def test_missing_videos_leave_holes_in_positional_splits_and_are_named_elsewhere(tmp_path):
    from surgflow.data.splits import split_holes

    v = [f"video{i:02d}" for i in range(1, 13)]
    full = resolve_split("auto", v)
    gone = {"video05": "prepare failed: corrupt", "video11": "prepare failed: no labels"}
    avail = [x for x in v if x not in gone]
    s, holes = split_holes("auto", avail, gone)
    assert holes == {"video05": "train", "video11": "test"}
    assert s == {k: [x for x in full[k] if x not in gone] for k in full}  # nobody else moves
    assert resolve_split("auto", avail, gone) == s
    assert resolve_split("all", avail, gone)["train"] == avail
    # a split that names a missing video refuses and says why it is missing
    with pytest.raises(SurgflowError, match=r"split 'cholec80_40_8_32' needs 1 video.*video05 "
                       r"\(train\): prepare failed: corrupt"):
        resolve_split("cholec80_40_8_32", [x for x in CHOLEC if x != "video05"], gone)
    f = tmp_path / "s.yaml"
    f.write_text("train: [video01, video11]\n")
    with pytest.raises(SurgflowError, match=r"video11 \(train\): prepare failed: no labels"):
        resolve_split(str(f), avail, gone)
