"""Instrument-anticipation regression targets (Rivoir et al., MICCAI 2020; docs/DOMAIN.md section 5)."""
from __future__ import annotations

import numpy as np


def anticipation_targets(present: np.ndarray, fps: float, horizon: float,
                         dtype=np.float32) -> np.ndarray:
    """Minutes until each instrument is next used, capped at the horizon.

    present: bool [N, I] per frame. Returns float32 [N, I] in [0, horizon]: 0 where the instrument
    is present, else min(horizon, (frames to its next use) / (60 * fps)) minutes, i.e. the
    backwards scan y[t] = min(h, y[t+1] + 1 / (60 * fps)) with the step following the frame rate;
    after the last use (or when never used) the target stays `horizon`. `dtype=np.float64` gives
    the exact frame distance / (60 fps) that scoring compares with (float32 for training).
    """
    present = np.asarray(present, bool)
    if present.ndim != 2:
        raise ValueError(f"present must be [N, I], got shape {present.shape}")
    n = present.shape[0]
    idx = np.arange(n)[:, None]
    # index of the next frame (>= t) with the instrument present; n (= never) if none
    nxt = np.where(present, idx, n)
    nxt = np.minimum.accumulate(nxt[::-1], axis=0)[::-1]
    minutes = (nxt - idx) / (60.0 * float(fps))
    out = np.where(nxt < n, np.minimum(minutes, horizon), horizon)
    return out.astype(dtype)
