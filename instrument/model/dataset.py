"""Training frames from a sound folder: analysis, loudness gate, standardisation, split.

``load_folder`` = ``read_folder`` + mode choice + ``analyze`` per clip (f0 from the note in the
file name when known, else the tracker) + gate. ``from_frames`` does the rest for callers that
already hold ``Frames`` (the online dissect feature). Everything is deterministic.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instrument.errors import CorpusError

log = logging.getLogger(__name__)

DEFAULT_LICENCE = "unknown: state the licence of the training sounds"


def note_to_hz(note: int) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


@dataclass
class TrainingSet:
    """Gated frames of one mode, with the clip each came from."""

    mode: str
    sample_rate: int
    hop_samples: int
    features: np.ndarray          # (N, F) float32 raw log features
    log2_f0: np.ndarray           # (N,) float32 log2(f0/440); 0 in unpitched mode
    clip: np.ndarray              # (N,) int index into clip_labels
    clip_labels: list[str]
    clip_notes: list[int | None]
    summary: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def labels(self) -> list[str]:
        """Per-frame label."""
        return [self.clip_labels[i] for i in self.clip]

    def note_per_frame(self) -> np.ndarray:
        """(N,) MIDI note (from the name, else rounded from f0); -1 unpitched/unknown."""
        if self.mode != "pitched":
            return np.full(len(self.clip), -1)
        rounded = np.round(69 + 12 * self.log2_f0).astype(int)
        named = np.array([-1 if n is None else n for n in self.clip_notes])[self.clip]
        return np.where(named >= 0, named, rounded)

    def valid_mask(self) -> np.ndarray:
        """(N, F) bool: False for harmonics at or above Nyquist (floored targets)."""
        n, f = self.features.shape
        valid = np.ones((n, f), bool)
        if self.mode == "pitched":
            from instrument.corpus.features import N_HARMONICS
            f0 = 440.0 * 2.0 ** self.log2_f0.astype(np.float64)
            k = np.arange(1, N_HARMONICS + 1)
            valid[:, :N_HARMONICS] = k[None, :] * f0[:, None] < self.sample_rate / 2
        return valid

    def split(self, held_out_fraction: float = 0.2, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices (train, held_out), split by clip, deterministic for a seed.

        With a single clip, its last ``held_out_fraction`` of frames is held out instead."""
        n_clips = len(self.clip_labels)
        if n_clips < 2:
            n = len(self.clip)
            cut = max(1, int(round(n * (1 - held_out_fraction))))
            return np.arange(cut), np.arange(cut, n)
        order = np.random.default_rng(seed).permutation(n_clips)
        n_out = min(n_clips - 1, max(1, int(math.ceil(held_out_fraction * n_clips))))
        held = np.isin(self.clip, order[:n_out])
        return np.flatnonzero(~held), np.flatnonzero(held)

    def stats(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardisation (mean, std) over frames ``idx``."""
        x = self.features[idx].astype(np.float64)
        return x.mean(axis=0).astype(np.float32), np.maximum(x.std(axis=0), 1e-3).astype(
            np.float32)


def from_frames(frames: list, notes: list[int | None] | None = None, gate_db: float = -60.0,
                relative_gate_db: float = 40.0, summary: dict | None = None) -> TrainingSet:
    """Gate a list of ``corpus.Frames`` (one per clip, one mode) into a :class:`TrainingSet`.

    A frame is kept when voiced (pitched mode) and its loudness is at least ``gate_db`` dBFS
    and within ``relative_gate_db`` of its clip's loudest frame."""
    if not frames:
        raise CorpusError("no analysed clips to train on; give a folder with audio files")
    mode, sr, hop = frames[0].mode, frames[0].sample_rate, frames[0].hop_samples
    feats, lf0, clip, labels, kept_notes = [], [], [], [], []
    for i, fr in enumerate(frames):
        if (fr.mode, fr.sample_rate, fr.hop_samples) != (mode, sr, hop):
            raise CorpusError(f"clip {fr.label!r}: analysed as {fr.mode}/{fr.sample_rate} Hz/"
                              f"hop {fr.hop_samples}, but the first clip is {mode}/{sr} Hz/"
                              f"hop {hop}; analyse all clips the same way")
        loud = np.asarray(fr.loudness_db, np.float64)
        ok = np.isfinite(loud) & np.all(np.isfinite(fr.features), axis=1)
        if mode == "pitched":
            ok &= np.asarray(fr.voiced, bool) & (np.asarray(fr.f0_hz) > 0)
        if not np.any(ok):
            continue
        ok &= loud >= max(gate_db, float(loud[ok].max()) - relative_gate_db)
        if not np.any(ok):
            continue
        j = len(labels)
        feats.append(np.asarray(fr.features, np.float32)[ok])
        if mode == "pitched":
            lf0.append(np.log2(np.asarray(fr.f0_hz, np.float64)[ok] / 440.0).astype(np.float32))
        else:
            lf0.append(np.zeros(int(ok.sum()), np.float32))
        clip.append(np.full(int(ok.sum()), j))
        labels.append(fr.label)
        kept_notes.append(notes[i] if notes is not None else None)
    if not feats:
        raise CorpusError(f"all {len(frames)} clips are silent or unvoiced below the "
                          f"{gate_db:g} dBFS gate; give louder or pitched material")
    summ = dict(summary or {})
    summ.setdefault("labels", sorted(set(labels)))
    summ.setdefault("licence", DEFAULT_LICENCE)
    summ["frames"] = int(sum(len(f) for f in feats))
    summ["clips_used"] = len(labels)
    return TrainingSet(mode, int(sr), int(hop), np.concatenate(feats), np.concatenate(lf0),
                       np.concatenate(clip), labels, kept_notes, summ)


def _choose_mode(corpus, sample_rate: int) -> str:
    from instrument.corpus.features import PITCHED_THRESHOLD, choose_mode

    mode, periodicity = choose_mode(corpus.clips, sample_rate)
    log.info("mode: %s (periodicity %.2f of sounding frames voiced; %s at >= %.2f); "
             "override with --mode", mode, periodicity, "pitched", PITCHED_THRESHOLD)
    return mode


def load_folder(folder: str | Path, sample_rate: int = 48000, mode: str | None = None,
                gate_db: float = -60.0, licence: str = DEFAULT_LICENCE) -> TrainingSet:
    """Read, analyse and gate a sound folder (``mode`` None = chosen from the sounds)."""
    from instrument.corpus.features import analyze
    from instrument.corpus.read import read_folder

    corpus = read_folder(Path(folder), sample_rate)
    if mode is None:
        mode = _choose_mode(corpus, sample_rate)
    if mode not in ("pitched", "unpitched"):
        raise CorpusError(f"mode: got {mode!r}, allowed pitched, unpitched, or None (auto)")
    frames, notes = [], []
    for c in corpus.clips:
        f0 = note_to_hz(c.note) if (mode == "pitched" and c.note is not None) else None
        frames.append(analyze(c.audio, sample_rate, mode, f0_hz=f0, label=c.label))
        notes.append(c.note)
    seconds = sum(len(c.audio) for c in corpus.clips) / sample_rate
    summary = {"folder": str(folder), "files": len(corpus.clips),
               "minutes": round(seconds / 60.0, 3),
               "licence": licence, "report": list(getattr(corpus, "report", []))[:200]}
    return from_frames(frames, notes, gate_db=gate_db, summary=summary)
