"""Latent calibration: the raw code box that the 0..1 knob square spans, and corpus points."""

from __future__ import annotations

import numpy as np


def calibrate(codes: np.ndarray, labels: list[str] | np.ndarray, max_points: int = 500,
              percentiles: tuple[float, float] = (1.0, 99.0), margin: float = 0.1,
              seed: int = 0) -> dict:
    """Encode-side statistics -> ``{"raw_lo", "raw_hi", "corpus_points", "corpus_labels"}``.

    ``raw_lo``/``raw_hi`` are robust percentiles of the training codes widened by ``margin``
    (a fraction of the span) on each side, so the knob square covers the corpus; corpus points
    are a deterministic subsample (<= ``max_points``) in knob coordinates 0..1.
    """
    codes = np.asarray(codes, np.float64)
    if codes.ndim != 2 or codes.shape[1] != 2 or len(codes) == 0:
        raise ValueError(f"codes must be (N, 2) with N > 0, got {codes.shape}")
    lo = np.percentile(codes, percentiles[0], axis=0)
    hi = np.percentile(codes, percentiles[1], axis=0)
    span = np.maximum(hi - lo, 1e-3)
    centre = (lo + hi) / 2
    lo, hi = centre - span * (0.5 + margin), centre + span * (0.5 + margin)
    rng = np.random.default_rng(seed)
    idx = np.arange(len(codes))
    if len(idx) > max_points:
        idx = np.sort(rng.choice(idx, size=max_points, replace=False))
    knob = np.clip((codes[idx] - lo) / (hi - lo), 0.0, 1.0)
    labels = [str(labels[i]) for i in idx]
    return {"raw_lo": [float(v) for v in lo], "raw_hi": [float(v) for v in hi],
            "corpus_points": [[round(float(x), 5), round(float(y), 5)] for x, y in knob],
            "corpus_labels": labels}
