"""Do a backbone's per-frame features tell the phase on videos it was not trained on? (issue 20:
why the hard profile is not learned.) For each backbone, a linear probe (multinomial logistic
regression, balanced classes) on the pooled features of every frame of the training videos,
scored per frame on the test videos, with no temporal model:

    python benchmarks/linear_probe.py --data PREPARED RUN [RUN ...]
    python benchmarks/linear_probe.py --data PREPARED --backbone tf_efficientnet_lite0 WEIGHTS.pth

RUN: a run directory (its best.pt backbone, trained end to end with the LSTM); a .pth file: a timm
backbone with those weights (e.g. ImageNet weights from surgflow.models.offline_weights), never
trained on the data. `train acc` is the probe on its own training frames: a large gap to `test acc`
means the features tell the training videos apart, not the phases.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def features(backbone, ds, videos, mean, std, batch: int = 64):
    """(features (N, C), phases (N,)) of every frame of `videos`, backbone in eval mode."""
    import torch

    feats, labels = [], []
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        for v in videos:
            n = ds.num_frames(v)
            for a in range(0, n, batch):
                x = torch.from_numpy(ds.read_frames(v, a, min(n, a + batch))).permute(0, 3, 1, 2)
                x = (x.float().div_(255.0) - m) / s  # (n, 3, H, W)
                feats.append(backbone(x).reshape(len(x), -1).numpy())
            labels.append(ds.phase(v))
    return np.concatenate(feats), np.concatenate(labels)


def probe(xtr, ytr, xte, yte) -> tuple[float, float]:
    """Train and test per-frame accuracy (%) of a balanced logistic regression on standardised
    features (the scaler is fitted on the training frames only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced").fit(sc.transform(xtr), ytr)
    return (100 * float((clf.predict(sc.transform(xtr)) == ytr).mean()),
            100 * float((clf.predict(sc.transform(xte)) == yte).mean()))


def main(argv=None) -> None:
    from surgflow.data.store import PreparedDataset
    from surgflow.models.backbones import build_backbone
    from surgflow.runs import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="run directories (best.pt) or weights .pth files")
    p.add_argument("--data", required=True, help="prepared dataset (its 'auto' split)")
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm name, for .pth files")
    args = p.parse_args(argv)
    ds = PreparedDataset(args.data, split="auto")
    train, test = ds.splits["train"], ds.splits["test"]
    print(f"{args.data}: {len(train)} training videos, {len(test)} test videos")
    print("| backbone | feature dim | train acc (probe's own frames) | test acc (per frame) |")
    print("|---|---|---|---|")
    for name in args.models:
        if name.endswith(".pth") and Path(name).is_file():
            net = build_backbone(args.backbone, pretrained=name)  # keys and shapes checked
            mean, std = net.mean, net.std
        else:
            model = load_model(name, "best")[0]
            net, mean, std = model.backbone, model.pixel_mean.tolist(), model.pixel_std.tolist()
        net.eval()
        xtr, ytr = features(net, ds, train, mean, std)
        xte, yte = features(net, ds, test, mean, std)
        tr, te = probe(xtr, ytr, xte, yte)
        print(f"| {name} | {xtr.shape[1]} | {tr:.1f} | {te:.1f} |", flush=True)


if __name__ == "__main__":
    main()
