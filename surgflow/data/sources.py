"""Fingerprints of a prepared video's raw sources, so a re-run of `prepare` redoes exactly the
videos whose video or annotation files changed (and says which file and how).

Annotation files are hashed whole (small). A video is fingerprinted by size, mtime and a sha256
of its first and last MiB (cheap on 1 GB files); when only its mtime changed (copied, touched),
the full-file hash recorded at prepare time decides. `full_hash=True` (`prepare --check
--full-hash`) compares that hash always: a same-size change in the middle whose mtime was
restored (`cp -p`, `rsync -a` over a bad copy) passes the cheap fingerprint.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from surgflow.io_utils import progress

EDGE = 1 << 20  # bytes hashed at each end of a video


def _sha256(path: Path, head_tail: bool = False, show: bool = False) -> str:
    """show: a progress bar in bytes (`--check --full-hash` reads whole videos of many GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if head_tail:
            size = os.fstat(f.fileno()).st_size
            h.update(f.read(EDGE))
            if size > EDGE:
                f.seek(max(EDGE, size - EDGE))
                h.update(f.read(EDGE))
        else:
            with progress(total=os.fstat(f.fileno()).st_size, desc=f"hash {path.name}", unit="B",
                          unit_scale=True, leave=False, disable=not show) as bar:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
                    bar.update(len(chunk))
    return h.hexdigest()


def video_fingerprint(path, full: bool = True) -> Optional[dict]:
    p = Path(path)
    if not p.is_file():
        return None
    st = p.stat()
    fp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_tail_sha256": _sha256(p, True)}
    if full:
        fp["sha256"] = _sha256(p)
    return fp


def source_info(raw) -> dict:
    """The manifest's `source` record of a RawVideo: its video path and every source's content."""
    files = {}
    for p in map(Path, raw.sources):
        if p == Path(raw.video_path):
            continue
        files[p.name] = _sha256(p) if p.is_file() else None
    return {"video": str(raw.video_path), "video_fingerprint": video_fingerprint(raw.video_path),
            "files": files}


def source_changes(old: dict, raw, full_hash: bool = False) -> list[str]:
    """Why the prepared video is stale: one line per changed source ([] = unchanged).

    full_hash: compare the video's whole-file sha256 with the recorded one even when size, mtime
    and first/last MiB agree (a same-size change in the middle whose mtime was restored, as
    `cp -p` or `rsync -a` do, passes the cheap fingerprint)."""
    if not old or "video_fingerprint" not in old:
        return ["recorded by an older surgflow (source sizes only, no content hashes)"]
    reasons = []
    files = {}
    for p in map(Path, raw.sources):
        if p != Path(raw.video_path):
            files[p.name] = p
    for name in sorted(set(files) | set(old.get("files", {}))):
        was = old.get("files", {}).get(name, "<absent>")
        p = files.get(name)
        now = _sha256(p) if p is not None and p.is_file() else (None if p is not None else "<absent>")
        if now != was:
            what = "removed" if now in (None, "<absent>") else ("added" if was in (None, "<absent>")
                                                                  else "content changed")
            reasons.append(f"{name}: {what}")
    vold = old.get("video_fingerprint")
    vname = Path(raw.video_path).name
    now = video_fingerprint(raw.video_path, full=False)
    if now is None or vold is None:
        if now != vold:
            reasons.append(f"{vname}: {'removed' if now is None else 'added'}")
    elif now["size"] != vold["size"]:
        reasons.append(f"{vname}: size {vold['size']} -> {now['size']} bytes")
    elif now["head_tail_sha256"] != vold["head_tail_sha256"]:
        reasons.append(f"{vname}: content changed (first/last MiB)")
    elif full_hash:
        if not vold.get("sha256"):
            reasons.append(f"{vname}: no full-file hash recorded at prepare time (an older "
                           f"surgflow); cannot verify it")
        elif _sha256(Path(raw.video_path), show=True) != vold["sha256"]:
            same = "same size and mtime" if now["mtime_ns"] == vold["mtime_ns"] else "same size"
            reasons.append(f"{vname}: content changed (full-file sha256 differs from the one "
                           f"recorded at prepare; {same}, first/last MiB equal: altered or "
                           f"corrupted in the middle)")
    elif now["mtime_ns"] != vold["mtime_ns"] and _sha256(Path(raw.video_path)) != vold.get("sha256"):
        reasons.append(f"{vname}: content changed (modified since prepare, full-file hash differs)")
    return reasons
