"""Parse and validate annotation files of the supported layouts (docs/DOMAIN.md section 4).

Every parser returns plain numpy arrays at the file's native rate and raises `SurgflowError` naming
the file, the line and the fix when the file is missing, empty, has a wrong header, an unknown
phase/tool name, a tool value other than 0/1, or frame numbers that do not increase.

- Cholec80 phase file: header `Frame\tPhase`, one row per 25-fps frame, phase name or id.
- Cholec80 tool file: header `Frame\t<7 tools>`, one row every 25 frames, values 0/1.
- AutoLaparo label file (`labels/label_XX.txt`): header `Frame\tPhase`, one row per second,
  1-based frame numbers, 1-based phase ids 1..7 (names are accepted too).
- MS-TCN ground truth (`groundTruth/<video>.txt`): one label name per line, one line per frame,
  no header; `mapping.txt` lines `id name`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from surgflow.io_utils import SurgflowError


def read_lines(path: Path, what: str) -> list[str]:
    """Lines of an annotation/prediction text file (BOM, CR and trailing blank lines dropped);
    a missing, non-UTF-8 or empty file raises SurgflowError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SurgflowError(f"{what} file not found: {path}; add the file or remove its video")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SurgflowError(f"{path}: not a UTF-8 text file ({e}); re-export it as plain text") from None
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not any(ln.strip() for ln in lines):
        raise SurgflowError(f"{path}: {what} file is empty; re-export the annotations of this video")
    return lines


def split_fields(line: str) -> list[str]:
    # Cholec80 files are tab separated; tolerate runs of spaces as in some re-exports.
    return line.split("\t") if "\t" in line else line.split()


def _check_header(path: Path, got: list[str], want: list[str]) -> None:
    norm = [g.strip().lower() for g in got]
    if norm != [w.lower() for w in want]:
        want_s, got_s = "\\t".join(want), "\\t".join(got)
        raise SurgflowError(f"{path}: line 1: expected header '{want_s}', got '{got_s}'; "
                            f"add the header line (tab separated)")


def _check_frames(path: Path, frames: np.ndarray, first_line: int = 2) -> None:
    if len(frames) > 1:
        bad = np.nonzero(np.diff(frames) <= 0)[0]
        if len(bad):
            i = int(bad[0]) + 1
            raise SurgflowError(
                f"{path}: line {i + first_line}: frame {frames[i]} does not increase "
                f"(previous {frames[i - 1]}); sort the rows and remove duplicates"
            )


def _phase_id(path: Path, lineno: int, token: str, names: list[str], one_based: bool) -> int:
    lookup = {n.lower(): i for i, n in enumerate(names)}
    key = token.strip().lower()
    if key in lookup:
        return lookup[key]
    try:
        v = int(key)
    except ValueError:
        v = None
    if v is not None:
        idx = v - 1 if one_based else v
        if 0 <= idx < len(names):
            return idx
        lo, hi = (1, len(names)) if one_based else (0, len(names) - 1)
        raise SurgflowError(f"{path}: line {lineno}: phase id {v} outside {lo}..{hi}; known phases: "
                            f"{', '.join(names)}")
    raise SurgflowError(f"{path}: line {lineno}: unknown phase {token!r}; known phases: "
                        f"{', '.join(names)}; fix the name")


def parse_phase_file(path, phase_names: list[str], one_based: bool = False,
                     what: str = "phase annotation") -> tuple[np.ndarray, np.ndarray]:
    """`Frame\\tPhase` file -> (frames int64 [R], phase ids int64 [R]).

    Phases may be names (case-insensitive) or ids; ids are 1-based when `one_based` (AutoLaparo).
    """
    path = Path(path)
    lines = read_lines(path, what)
    _check_header(path, split_fields(lines[0]), ["Frame", "Phase"])
    frames, tokens = [], []
    for n, line in enumerate(lines[1:], start=2):
        parts = split_fields(line)
        if len(parts) != 2:
            raise SurgflowError(f"{path}: line {n}: expected 2 columns (Frame, Phase), got "
                                f"{len(parts)}: {line!r}")
        try:
            frames.append(int(parts[0]))
        except ValueError:
            raise SurgflowError(f"{path}: line {n}: frame {parts[0]!r} is not an integer") from None
        tokens.append(parts[1])
    # a Cholec80 file has ~10^5 rows but only a handful of distinct tokens: resolve each once
    cache: dict[str, int] = {}
    ids = []
    for n, tok in enumerate(tokens, start=2):
        v = cache.get(tok)
        if v is None:
            v = cache[tok] = _phase_id(path, n, tok, phase_names, one_based)
        ids.append(v)
    if not frames:
        raise SurgflowError(f"{path}: {what} file has a header but no rows; re-export it")
    f = np.asarray(frames, np.int64)
    _check_frames(path, f)
    return f, np.asarray(ids, np.int64)


def parse_tool_file(path, tool_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`Frame\\t<tools>` file -> (frames int64 [R], presence float32 [R, K]) in `tool_names` order.

    The header must name exactly the known tools (any order); values must be 0 or 1.
    """
    path = Path(path)
    lines = read_lines(path, "tool annotation")
    header = [h.strip() for h in split_fields(lines[0])]
    if not header or header[0].lower() != "frame":
        want_s = "\\t".join(["Frame"] + list(tool_names))
        raise SurgflowError(f"{path}: line 1: expected header '{want_s}', got {lines[0]!r}; "
                            f"add the header line")
    known = {t.lower(): i for i, t in enumerate(tool_names)}
    cols = []
    for h in header[1:]:
        if h.lower() not in known:
            raise SurgflowError(f"{path}: line 1: unknown tool {h!r}; known tools: "
                                f"{', '.join(tool_names)}; fix the header")
        cols.append(known[h.lower()])
    missing = [t for i, t in enumerate(tool_names) if i not in cols]
    if missing or len(set(cols)) != len(cols):
        raise SurgflowError(f"{path}: line 1: header must list each tool once; missing "
                            f"{', '.join(missing) or '-'}; known tools: {', '.join(tool_names)}")
    frames = np.zeros(len(lines) - 1, np.int64)
    values = np.zeros((len(lines) - 1, len(tool_names)), np.float32)
    for r, line in enumerate(lines[1:]):
        n = r + 2
        parts = split_fields(line)
        if len(parts) != len(header):
            raise SurgflowError(f"{path}: line {n}: expected {len(header)} columns, got "
                                f"{len(parts)}: {line!r}")
        try:
            frames[r] = int(parts[0])
        except ValueError:
            raise SurgflowError(f"{path}: line {n}: frame {parts[0]!r} is not an integer") from None
        for c, tok in zip(cols, parts[1:]):
            tok = tok.strip()
            if tok not in ("0", "1"):
                raise SurgflowError(f"{path}: line {n}: tool {tool_names[c]} value {tok!r}; "
                                    f"tool values must be 0 or 1")
            values[r, c] = 1.0 if tok == "1" else 0.0
    if len(frames) == 0:
        raise SurgflowError(f"{path}: tool annotation file has a header but no rows; re-export it")
    _check_frames(path, frames)
    return frames, values


def rows_from_frames(path, frames: np.ndarray, step: int, first: int = 0) -> None:
    """Check that frame numbers are first, first+step, ... (the row index is then the time)."""
    want = first + step * np.arange(len(frames))
    bad = np.nonzero(frames != want)[0]
    if len(bad):
        i = int(bad[0])
        raise SurgflowError(
            f"{path}: line {i + 2}: frame {frames[i]}, expected {want[i]} (rows must be every "
            f"{step} frame(s) starting at {first}, without gaps); fill the gap or fix the numbering")


def parse_mapping(path) -> list[str]:
    """MS-TCN `mapping.txt` (`id name` per line, ids 0..C-1) -> names in id order."""
    path = Path(path)
    lines = read_lines(path, "mapping")
    names: dict[int, str] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise SurgflowError(f"{path}: line {n}: expected 'id name', got {line!r}")
        try:
            i = int(parts[0])
        except ValueError:
            raise SurgflowError(f"{path}: line {n}: id {parts[0]!r} is not an integer") from None
        if i in names:
            raise SurgflowError(f"{path}: line {n}: id {i} listed twice")
        names[i] = parts[1].strip()
    if sorted(names) != list(range(len(names))):
        raise SurgflowError(f"{path}: ids must be 0..{len(names) - 1} without gaps, got "
                            f"{sorted(names)}")
    return [names[i] for i in range(len(names))]


def parse_mstcn_ground_truth(path, names: list[str]) -> np.ndarray:
    """MS-TCN ground truth (one label name per line) -> ids int64 [R]."""
    path = Path(path)
    lines = read_lines(path, "ground-truth")
    lookup = {n: i for i, n in enumerate(names)}
    out = np.empty(len(lines), np.int64)
    for n, line in enumerate(lines, start=1):
        key = line.strip()
        if key not in lookup:
            raise SurgflowError(f"{path}: line {n}: unknown label {key!r}; known labels (mapping.txt): "
                                f"{', '.join(names)}")
        out[n - 1] = lookup[key]
    return out
