"""Model figures: log-spectral distance (dB) and the 2-D PCA baseline.

Log-spectral distance (LSD): for each frame, the RMS over its *audible* bins of the dB
difference between decoded and target amplitudes (both clamped at ``AMP_FLOOR``), then the
RMS over frames. A bin is audible when it lies below Nyquist (``valid``) and its target is at
least ``audible_db`` above the floor (20 dB above 1e-4 = -60 dB relative to unit frame power).
"""

from __future__ import annotations

import math

import numpy as np

LOG_TO_DB = 20.0 / math.log(10.0)


def lsd_db(pred_log: np.ndarray, target_log: np.ndarray, valid: np.ndarray,
           floor_log: float, audible_db: float = 20.0) -> float:
    """Log-spectral distance in dB over frames (see module docstring)."""
    p = np.maximum(np.asarray(pred_log, np.float64), floor_log)
    t = np.maximum(np.asarray(target_log, np.float64), floor_log)
    audible = np.asarray(valid, bool) & ((t - floor_log) * LOG_TO_DB >= audible_db)
    d2 = ((p - t) * LOG_TO_DB) ** 2 * audible
    n = audible.sum(axis=1)
    keep = n > 0
    if not np.any(keep):
        return float("nan")
    per_frame = d2[keep].sum(axis=1) / n[keep]
    return float(np.sqrt(per_frame.mean()))


def frame_lsd_db(a_log: np.ndarray, b_log: np.ndarray, floor_log: float) -> np.ndarray:
    """Per-frame RMS dB difference over all bins (both clamped at the floor): (N,)."""
    a = np.maximum(np.asarray(a_log, np.float64), floor_log)
    b = np.maximum(np.asarray(b_log, np.float64), floor_log)
    return np.sqrt((((a - b) * LOG_TO_DB) ** 2).mean(axis=1))


class PCA2:
    """2-D PCA on standardised features, decoded linearly (the baseline)."""

    def __init__(self, x_std: np.ndarray):
        x = np.asarray(x_std, np.float64)
        self.centre = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.centre, full_matrices=False)
        self.components = vt[:2]

    def reconstruct(self, x_std: np.ndarray) -> np.ndarray:
        c = (np.asarray(x_std, np.float64) - self.centre) @ self.components.T
        return c @ self.components + self.centre


def pca_lsd_db(train_log: np.ndarray, test_log: np.ndarray, mean: np.ndarray, std: np.ndarray,
               valid: np.ndarray, floor_log: float) -> float:
    """Held-out LSD of a 2-D PCA fitted on the training frames (same standardisation)."""
    pca = PCA2((train_log - mean) / std)
    rec = pca.reconstruct((test_log - mean) / std) * std + mean
    return lsd_db(rec, test_log, valid, floor_log)


def nn_note_accuracy(code_train: np.ndarray, note_train: np.ndarray, code_test: np.ndarray,
                     note_test: np.ndarray) -> float:
    """Fraction of held-out frames whose nearest training code has the same note (pitch
    leakage into the code; low is good, chance is 1/number of notes)."""
    if len(code_train) == 0 or len(code_test) == 0:
        return float("nan")
    d = ((code_test[:, None, :] - code_train[None, :, :]) ** 2).sum(-1)
    return float(np.mean(note_train[np.argmin(d, axis=1)] == note_test))
