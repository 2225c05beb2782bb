"""Offline, deterministic learning render: training steps interleaved with audio hops.

No threads: after each audio hop the trainer takes ``steps_per_hop`` optimiser steps, so the
WAV is what the learning would sound like live if the trainer managed that many steps per hop
(``steps_per_hop`` x hops-per-second steps per second). The same input, seed and settings give
the same samples (torch runs on one thread here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instrument.errors import ConfigError, describe


@dataclass
class History:
    """What a dissection went through, for figures and the picture sheet."""

    sample_rate: int
    hop_samples: int
    mode: str
    in_frames: np.ndarray          # (T, F) input log features, one per rendered hop
    out_frames: np.ndarray         # (T, F) reconstructed log features
    frame_lsd_db: np.ndarray       # (T,) per-frame LSD (NaN for silent/unvoiced frames)
    frame_step: np.ndarray         # (T,) trainer step whose snapshot made the frame
    progress: list = field(default_factory=list)      # trainer.history (Progress)
    code_moments: list = field(default_factory=list)  # (step, knob codes (N, 2), labels)


def history_of(session) -> History:
    """Collect a :class:`History` from a :class:`~instrument.dissect.session.Dissection`."""
    t = session.trainer
    n_feat = t.n_feat

    def stack(rows: list) -> np.ndarray:
        return np.asarray(rows, np.float32) if rows else np.zeros((0, n_feat), np.float32)

    return History(session.sample_rate, session.hop, session.mode, stack(session.in_frames),
                   stack(session.out_frames), np.asarray(session.frame_lsd_db, np.float64),
                   np.asarray(session.frame_step, np.int64), list(t.history),
                   list(t.code_moments))


def lsd_over(history: History, t0_s: float, t1_s: float) -> float:
    """RMS of the per-frame LSD (dB) of frames rendered between t0_s and t1_s (NaN-free)."""
    hop_s = history.hop_samples / history.sample_rate
    i0, i1 = int(t0_s / hop_s), int(math.ceil(t1_s / hop_s))
    d = history.frame_lsd_db[max(0, i0):max(0, i1)]
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d ** 2))) if len(d) else float("nan")


def render_learning(source, out_wav: str | Path | None, seconds: float | None = None,
                    steps_per_hop: int = 2, seed: int = 0, mode: str = "auto",
                    sample_rate: int = 48000, listen: str = "recon", lr: float = 3e-3,
                    replay_frames: int = 8192, snapshot_every: int = 4,
                    return_history: bool = False, **trainer_kw):
    """Render the sound of a network learning ``source`` (a file, folder or FileSource).

    A source shorter than ``seconds`` is looped up to ``seconds``.
    Returns a report dict: seconds, hops, steps, source_seconds (one pass over the source),
    passes (how many passes were begun: > 1 when it looped), lsd_first_s_db / lsd_last_s_db (the
    reconstruction distance of the stream in the first and last second), final loss; with
    ``return_history`` also the :class:`History` (``(report, history)``).
    """
    import soundfile as sf
    import torch

    from instrument.dissect.session import Dissection
    from instrument.dissect.stream import FileSource
    from instrument.dissect.trainer import OnlineTrainer

    if isinstance(steps_per_hop, bool) or not isinstance(steps_per_hop, int) \
            or not 0 <= steps_per_hop <= 1000:
        raise ConfigError(describe("steps_per_hop", steps_per_hop, "an int in 0..1000",
                                   "pass e.g. 2"))
    # a source shorter than ``seconds`` loops up to it (without ``seconds``: one pass)
    src = source if isinstance(source, FileSource) else \
        FileSource(source, sample_rate, loop=seconds is not None, seconds=seconds)
    sample_rate = src.sample_rate
    if mode == "auto":
        mode = detect_mode(src)
    from instrument.dissect.threads import limit_blas_threads

    limit_blas_threads(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = OnlineTrainer(mode, sample_rate, seed=seed, lr=lr, replay_frames=replay_frames,
                                snapshot_every=snapshot_every, **trainer_kw)
        sess = Dissection(trainer, listen=listen, seed=seed)
        out = []
        for hop in src.hops():
            sess.label = src.label
            out.append(sess.process_hop(hop))
            for _ in range(steps_per_hop):
                trainer.step()
    finally:
        torch.set_num_threads(threads)
    audio = np.concatenate(out) if out else np.zeros(0, np.float32)
    if out_wav is not None:
        Path(out_wav).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out_wav), audio, sample_rate, subtype="FLOAT")
    hist = history_of(sess)
    dur_s = len(audio) / sample_rate
    report = {"seconds": round(dur_s, 3), "hops": len(out), "steps": trainer.step_count,
              "mode": mode, "sample_rate": sample_rate, "steps_per_hop": steps_per_hop,
              "lsd_first_s_db": lsd_over(hist, 0.0, 1.0),
              "lsd_last_s_db": lsd_over(hist, dur_s - 1.0, dur_s),
              "loss": trainer.loss, "snapshots_taken": sess.swaps,
              "source_seconds": round(src.pass_samples / sample_rate, 3),
              "passes": src.passes,
              "out_wav": str(out_wav) if out_wav is not None else None,
              "audio": audio}
    return (report, hist) if return_history else report


def detect_mode(src) -> str:
    """'pitched' or 'unpitched' from the first readable file (as ``instrument train`` does)."""
    from instrument.corpus.features import PITCHED_THRESHOLD, periodicity

    for _, audio in src.clips():
        return "pitched" if periodicity(audio, src.sample_rate) >= PITCHED_THRESHOLD \
            else "unpitched"
    return "pitched"
