"""Offline, deterministic learning render: training steps interleaved with audio hops.

No threads: after each audio hop the trainer takes ``steps_per_hop`` optimiser steps, so the
WAV is what the learning would sound like live if the trainer managed that many steps per hop
(``steps_per_hop`` x hops-per-second steps per second). The same input, seed and settings give
the same samples (torch runs on one thread here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instrument.errors import ConfigError, describe


@dataclass
class History:
    """What a dissection went through, for figures and the picture sheet.

    Rows are those of :class:`~instrument.dissect.session.FrameHistory`: one per ``stride``
    stream frames (1 unless a long live session decimated them)."""

    sample_rate: int
    hop_samples: int
    mode: str
    in_frames: np.ndarray          # (T, F) input log features, first frame of each row
    out_frames: np.ndarray         # (T, F) its reconstruction as played
    frame_lsd_db: np.ndarray       # (T,) RMS of the row's per-frame LSD (NaN: none voiced)
    frame_step: np.ndarray         # (T,) trainer step whose snapshot made the row's frame
    frame_index: np.ndarray = None  # (T,) stream frame index of each row
    lsd_sq: np.ndarray = None      # (T,) sum of squared per-frame LSD over the row
    lsd_n: np.ndarray = None       # (T,) frames with an LSD in the row
    stride: int = 1                # stream frames per row
    frames: int = 0                # stream frames in all
    progress: list = field(default_factory=list)      # trainer.history (Progress)
    code_moments: list = field(default_factory=list)  # (step, knob codes (N, 2), labels)

    @property
    def hop_s(self) -> float:
        return self.hop_samples / self.sample_rate

    @property
    def seconds(self) -> float:
        return self.frames * self.hop_s


def history_of(session) -> History:
    """Collect a :class:`History` from a :class:`~instrument.dissect.session.Dissection`."""
    t = session.trainer
    fh = session.history
    n_feat = t.n_feat

    def stack(rows: list) -> np.ndarray:
        return np.asarray(rows, np.float32) if rows else np.zeros((0, n_feat), np.float32)

    sq = np.asarray(fh.lsd_sq, np.float64)
    n = np.asarray(fh.lsd_n, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_lsd = np.where(n > 0, np.sqrt(sq / np.maximum(n, 1)), np.nan)
    return History(session.sample_rate, session.hop, session.mode, stack(fh.in_frames),
                   stack(fh.out_frames), row_lsd, np.asarray(fh.step, np.int64),
                   np.asarray(fh.index, np.int64), sq, n, fh.stride, fh.frames,
                   list(t.history), list(t.code_moments))


def lsd_over(history: History, t0_s: float, t1_s: float) -> float:
    """The stream LSD (dB) of the frames played between ``t0_s`` and ``t1_s`` of stream time:
    the RMS over those frames of each frame's LSD against the snapshot that played it, i.e.
    :func:`instrument.model.metrics.lsd_db` over them. The printed figures and the sheet's
    LSD curve both come from here. NaN when no frame there is voiced."""
    t = history.frame_index * history.hop_s
    sel = (t >= t0_s) & (t < t1_s)
    n = int(history.lsd_n[sel].sum())
    return float(np.sqrt(history.lsd_sq[sel].sum() / n)) if n else float("nan")


def lsd_first_last_s(history: History, window_s: float = 1.0) -> tuple[float, float]:
    """Stream LSD over the first and the last ``window_s`` of the stream (the same frames
    when the stream is no longer than ``window_s``)."""
    end = history.seconds
    return lsd_over(history, 0.0, window_s), lsd_over(history, max(0.0, end - window_s),
                                                       end + history.hop_s)


def render_learning(source, out_wav: str | Path | None, seconds: float | None = None,
                    steps_per_hop: int = 2, seed: int = 0, mode: str = "auto",
                    sample_rate: int = 48000, listen: str = "recon", lr: float = 3e-3,
                    replay_frames: int = 8192, snapshot_every: int = 4,
                    return_history: bool = False, **trainer_kw):
    """Render the sound of a network learning ``source`` (a file, folder or FileSource).

    A source shorter than ``seconds`` is looped up to ``seconds``.
    Returns a report dict: seconds, hops, steps, source_seconds (one pass over the source),
    passes (how many passes were begun: > 1 when it looped), lsd_first_s_db / lsd_last_s_db
    (the stream LSD, :func:`lsd_over`, of the first and last second), final loss; with
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
    trainer.finish()  # the final state: a snapshot and its square for the sheet
    hist = history_of(sess)
    dur_s = len(audio) / sample_rate
    first_db, last_db = lsd_first_last_s(hist)
    report = {"seconds": round(dur_s, 3), "hops": len(out), "steps": trainer.step_count,
              "mode": mode, "sample_rate": sample_rate, "steps_per_hop": steps_per_hop,
              "lsd_first_s_db": first_db, "lsd_last_s_db": last_db,
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
