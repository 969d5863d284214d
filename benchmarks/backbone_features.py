"""Are a trained model's backbone features alive? (issue 20: why some from-scratch frozen-statistics
models never fit.) For each run (or initial weights file), the pooled backbone features of the
first frames of some videos, in eval mode:

    python benchmarks/backbone_features.py --data PREPARED --videos video06,video07 RUN [RUN ...]
    python benchmarks/backbone_features.py --data PREPARED --backbone test_resnet INIT.pth ...

alive = share of feature dimensions non-zero on at least one frame (the rest are dead ReLUs);
|f| = mean absolute feature; spread = mean over dimensions of the std over frames, divided by
|f| (near 0: every frame gives the same features, so the temporal head sees a constant input).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def feature_stats(backbone, frames) -> dict:
    """frames (N, 3, H, W) normalised -> {alive, abs_mean, spread} of backbone(frames) (N, C)."""
    import torch

    with torch.no_grad():
        f = backbone(frames).reshape(len(frames), -1)  # (N, C)
    scale = f.abs().mean().item()
    return {"alive": (f.abs().amax(0) > 1e-6).float().mean().item(), "abs_mean": scale,
            "spread": f.std(0).mean().item() / max(scale, 1e-12)}


def main(argv=None) -> None:
    import timm
    import torch

    from surgflow.data.store import PreparedDataset
    from surgflow.models.backbones import IMAGENET_MEAN, IMAGENET_STD
    from surgflow.runs import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="run directories (last.pt) or initial weights .pth")
    p.add_argument("--data", required=True, help="prepared dataset")
    p.add_argument("--videos", default="", help="comma-separated (default: the first two)")
    p.add_argument("--frames", type=int, default=200, help="first N frames of each video")
    p.add_argument("--backbone", default="test_resnet", help="timm name, for .pth files")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ds = PreparedDataset(args.data)
    videos = args.videos.split(",") if args.videos else ds.videos[:2]
    x = np.concatenate([ds.read_frames(v, 0, min(args.frames, ds.num_frames(v))) for v in videos])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    print(f"{len(x)} frames of {', '.join(videos)}")
    print("| model | alive % | mean abs feature | spread over frames / mean |")
    print("|---|---|---|---|")
    for m in args.models:
        if m.endswith((".pth", ".pt")) and Path(m).is_file():
            net = timm.create_model(args.backbone, pretrained=False, num_classes=0)
            net.load_state_dict(torch.load(m, map_location="cpu", weights_only=True))
        else:
            net = load_model(m, "last")[0].backbone
        s = feature_stats(net.eval(), x)
        print(f"| {m} | {100 * s['alive']:.0f} | {s['abs_mean']:.3g} | {s['spread']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
