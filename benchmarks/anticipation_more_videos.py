"""Does the honest anticipation models' gap to the oracle phase prior shrink with more training
videos? (issue 20) The cheating experiment's setup from scratch, on the same 3 test videos
(06-08 of data seed 0: `surgflow synth` draws each video from (seed, index), so videos 01-08 of an
18-video set are those of the 8-video set), trained on 15 videos (01-05, 09-18) for as many
optimiser steps as 40 epochs on the 5 videos 01-05:

    python benchmarks/anticipation_more_videos.py OUT --seeds 0,1,2,3,4 --variants bn_free,frozen_bn

Prints the frame-free baselines (prior fitted on 5 and on 15 videos) and one RESULT line per
training (test wMAE in minutes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    from surgflow.data.store import PreparedDataset
    from surgflow.experiments.cheating import CheatingSetup, _job, _prepare_data, trivial_baselines
    from surgflow.io_utils import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--variants", default="bn_free,frozen_bn")
    args = p.parse_args(argv)
    s = replace(CheatingSetup(), videos=18, train_videos=15)
    prepared, split, _, _ = _prepare_data(args.out, s)
    names = [f"video{i:02d}" for i in range(1, 19)]
    small, test, train = names[:5], names[5:8], names[:5] + names[8:]
    atomic_write_text(split, json.dumps({"train": train, "val": [], "test": test}) + "\n")
    ds = PreparedDataset(prepared)
    steps = {k: sum(-(-ds.num_frames(v) // s.seq_len) for v in vids)  # chunks of T per epoch
             for k, vids in (("small", small), ("train", train))}
    s = replace(s, epochs=round(40 * steps["small"] / steps["train"]))
    print(f"train {', '.join(train)}; test {', '.join(test)}; steps per epoch {steps['small']} "
          f"(5 videos) vs {steps['train']}: {s.epochs} epochs", flush=True)
    for label, vids in (("5", small), ("15", train)):
        b = trivial_baselines(prepared, vids, test, s.horizon)
        print(f"baselines, prior fitted on {label} videos:",
              json.dumps({k: round(m["wMAE"], 3) for k, m in b.items()}), flush=True)
    for seed in (int(x) for x in args.seeds.split(",")):
        for variant in args.variants.split(","):
            t0 = time.time()
            r = _job(str(args.out), s, variant, seed, str(prepared), str(split), "cpu", 1, True)
            evals = {k: {m: round(e[m], 3) for m in ("inMAE", "outMAE", "wMAE")}
                     for k, e in r["evals"].items()}
            print("RESULT", json.dumps({"seed": seed, "variant": variant, "s": round(time.time() - t0),
                                        "evals": evals}), flush=True)


if __name__ == "__main__":
    main()
