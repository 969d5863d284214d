"""Named dataset splits (docs/DOMAIN.md section 4) and user split files.

`resolve_split(name_or_path, available_videos) -> {"train": [...], "val": [...], "test": [...]}`.

Named splits refer to videos by their official 1-based number. A number is matched to the
available video whose name ends in that number, zero padding ignored: Cholec80 id 1 is `video01`
(prepare keeps the file stem), AutoLaparo id 1 is `01`. A missing video is an error listing all
missing ones; silently training on fewer videos is never done. Videos `prepare` failed for
(the manifest's `failed`) are named with their reason: a named split or split file that needs one
refuses; `auto` and `all` are resolved over every video the manifest knows, so a failed video
leaves a hole in its own subset instead of moving others between train, val and test.

User split files: YAML or JSON with keys `train`, `val` (optional), `test` (optional), each a list
of video names (or numbers, matched like named splits). MS-TCN: pass a `*.bundle` file such as
`splits/train.split1.bundle`; its sibling `test.split1.bundle` becomes the test subset (entries may
carry a `.txt` extension, which is stripped); MS-TCN splits have no validation subset.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Optional

import yaml

from surgflow.io_utils import SurgflowError
from surgflow.registry import SPLITS  # name -> function(available: list[str]) -> {subset: [...]}

SUBSETS = ("train", "val", "test")

ANTICIPATION_FOLDS = [
    [2, 4, 6, 12, 24, 29, 34, 37, 38, 39, 44, 58, 60, 61, 64, 66, 75, 78, 79, 80],
    [1, 3, 5, 9, 13, 16, 18, 21, 22, 25, 31, 36, 45, 46, 48, 50, 62, 71, 72, 73],
    [10, 15, 17, 20, 32, 41, 42, 43, 47, 49, 51, 52, 53, 55, 56, 69, 70, 74, 76, 77],
    [7, 8, 11, 14, 19, 23, 26, 27, 28, 30, 33, 35, 40, 54, 57, 59, 63, 65, 67, 68],
]


def _number_index(available: Iterable[str]) -> dict[int, str]:
    out: dict[int, str] = {}
    for name in available:
        m = re.search(r"(\d+)$", name)
        if m:
            k = int(m.group(1))
            if k in out:
                raise SurgflowError(f"videos {out[k]!r} and {name!r} both end in number {k}; "
                                    f"named splits need unique video numbers (use a split file)")
            out[k] = name
    return out


def _by_ids(split_name: str, available: list[str], ids: dict[str, list[int]]) -> dict:
    index = _number_index(available)
    missing = sorted({i for v in ids.values() for i in v if i not in index})
    if missing:
        raise SurgflowError(
            f"split '{split_name}' needs videos numbered {_ranges(missing)}, which are not in the "
            f"prepared dataset ({len(available)} videos); prepare them, or use split 'auto' or a "
            f"split file")
    return {k: sorted(index[i] for i in ids.get(k, [])) for k in SUBSETS}


def _ranges(xs: list[int]) -> str:
    parts, start = [], None
    for i, x in enumerate(xs):
        if start is None:
            start = x
        if i + 1 == len(xs) or xs[i + 1] != x + 1:
            parts.append(f"{start}" if start == x else f"{start}-{x}")
            start = None
    return ", ".join(parts)


SPLIT_IDS: dict[str, dict[str, list[int]]] = {}  # named splits' official numbers (score --videos)


def _ids_split(name: str, ids: dict[str, list[int]]):
    SPLIT_IDS[name] = ids
    SPLITS.add(name, lambda available: _by_ids(name, available, ids))


_ids_split("cholec80_40_8_32", {"train": list(range(1, 41)), "val": list(range(41, 49)),
                                "test": list(range(49, 81))})
_ids_split("cholec80_32_8_40", {"train": list(range(1, 33)), "val": list(range(33, 41)),
                                "test": list(range(41, 81))})
_ids_split("cholec80_40_40", {"train": list(range(1, 41)), "test": list(range(41, 81))})
_ids_split("cholec80_anticipation", {"train": ANTICIPATION_FOLDS[0] + ANTICIPATION_FOLDS[1],
                                     "val": ANTICIPATION_FOLDS[2], "test": ANTICIPATION_FOLDS[3]})
_ids_split("autolaparo_10_4_7", {"train": list(range(1, 11)), "val": list(range(11, 15)),
                                 "test": list(range(15, 22))})


@SPLITS.register("all")
def _all(available: list[str]) -> dict:
    return {"train": sorted(available), "val": [], "test": []}


@SPLITS.register("auto")
def _auto(available: list[str]) -> dict:
    """Sorted videos, first 60% train, next 20% val, rest test (at least one test video if n >= 2)."""
    v = sorted(available)
    n = len(v)
    n_train = max(1, round(0.6 * n)) if n else 0
    n_val = round(0.2 * n)
    if n >= 2 and n_train + n_val >= n:
        n_train, n_val = (n - 1, 0) if n_val == 0 else (n_train, n - 1 - n_train)
    return {"train": v[:n_train], "val": v[n_train:n_train + n_val], "test": v[n_train + n_val:]}


def _read_bundle(path: Path) -> list[str]:
    if not path.is_file():
        raise SurgflowError(f"split bundle not found: {path}; MS-TCN splits come as "
                            f"train.splitN.bundle + test.splitN.bundle")
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            names.append(line[:-4] if line.endswith(".txt") else line)
    return names


def _load_file(path: Path) -> dict:
    if path.suffix == ".bundle":
        m = re.match(r"^(train|test)(\..*)\.bundle$", path.name)
        if not m:
            raise SurgflowError(f"{path}: bundle split files must be named train.<id>.bundle or "
                                f"test.<id>.bundle")
        tag = m.group(2)
        return {"train": _read_bundle(path.parent / f"train{tag}.bundle"), "val": [],
                "test": _read_bundle(path.parent / f"test{tag}.bundle")}
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as e:
        raise SurgflowError(f"{path}: cannot parse split file ({e}); expected YAML/JSON with "
                            f"train/val/test lists") from None
    if not isinstance(data, dict):
        raise SurgflowError(f"{path}: a split file must be a mapping with keys train, val, test")
    unknown = sorted(set(data) - set(SUBSETS))
    if unknown:
        raise SurgflowError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
                            f"train, val, test")
    if "train" not in data:
        raise SurgflowError(f"{path}: missing key 'train'")
    out = {}
    for k in SUBSETS:
        v = data.get(k) or []
        if not isinstance(v, list):
            raise SurgflowError(f"{path}: '{k}' must be a list of video names")
        out[k] = v
    return out


def _match_names(path: Path, split: dict, available: list[str]) -> dict:
    avail = set(available)
    index = None
    out, missing = {}, []
    for k in SUBSETS:
        names = []
        for v in split.get(k, []):
            if isinstance(v, int) and not isinstance(v, bool):
                index = index if index is not None else _number_index(available)
                if v not in index:
                    missing.append(str(v))
                    continue
                v = index[v]
            v = str(v)
            if v not in avail:
                missing.append(v)
                continue
            names.append(v)
        out[k] = sorted(names)
    if missing:
        raise SurgflowError(f"{path}: {len(missing)} video(s) not in the prepared dataset: "
                            f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}; "
                            f"prepare them or remove them from the split file")
    return out


# Splits defined by position in the sorted list: a video prepare could not do keeps its place
# (a hole in its subset) so that it does not move other videos between train, val and test.
POSITIONAL = ("all", "auto")


def resolve_split(name_or_path, available_videos: Iterable[str],
                  missing: Optional[dict[str, str]] = None) -> dict[str, list[str]]:
    """Split name (registry) or split file path -> {"train", "val", "test"} sorted name lists.

    missing: {video: why} for videos the dataset knows but cannot serve (prepare failed). A
    positional split (POSITIONAL) is resolved over available + missing and the missing ones are
    left out, so each other video keeps the subset it has when nothing fails (`split_holes` says
    where the holes are); a split naming videos (named benchmark splits, split files) that needs
    a missing video refuses, saying why it is missing."""
    return split_holes(name_or_path, available_videos, missing)[0]


def split_holes(name_or_path, available_videos: Iterable[str],
                missing: Optional[dict[str, str]] = None) -> tuple[dict, dict[str, str]]:
    """`resolve_split` and {missing video: the subset it would be in} (its hole)."""
    have = set(available_videos)
    missing = {v: w for v, w in (missing or {}).items() if v not in have}
    available = sorted(have | set(missing))
    key = str(name_or_path)
    if key in SPLITS:
        out = SPLITS.get(key)(available)
    else:
        path = Path(key)
        if not path.is_file():
            raise SurgflowError(f"unknown split '{key}' (not a registered name nor a file); known "
                                f"splits: {', '.join(SPLITS.names())}, or a YAML/JSON/.bundle file")
        out = _match_names(path, _load_file(path), available)
    seen: dict[str, str] = {}
    for k in SUBSETS:
        for v in out[k]:
            if v in seen and seen[v] != k:
                raise SurgflowError(f"split '{key}': video {v!r} is in both {seen[v]} and {k}; "
                                    f"a video may belong to one subset only")
            seen[v] = k
    holes = {v: k for v, k in seen.items() if v in missing}
    if holes and key not in POSITIONAL:
        raise SurgflowError(
            f"split '{key}' needs {len(holes)} video(s) that are not in the prepared dataset: "
            + "; ".join(f"{v} ({holes[v]}): {missing[v]}" for v in sorted(holes))
            + "; fix and prepare them (`surgflow prepare ... --check` lists every problem), or "
              "use a split file without them")
    return {k: [v for v in out[k] if v not in missing] for k in SUBSETS}, holes
