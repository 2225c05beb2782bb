"""What a dissection plays, hop by hop: the stream through the learning network, or the
current decoder at the knobs, or either mixed with the dry input.

:class:`Dissection.process_hop` is the whole per-hop pipeline (analyse the incoming hop, hand
its frames to the trainer, render one hop of output). It never waits for the trainer: it reads
``trainer.snapshot`` (an immutable object swapped by reference) once per hop, so a new
snapshot is taken up at a hop boundary. In "recon" mode the harmonic synthesizer crossfades the
previous and the current hop's wavetables across the hop and the noise is overlap-added, so a
weight update is a one-hop crossfade like any timbre change; in "knobs" mode the engine's
``swap_decoder`` does the same handoff.

Listen modes: ``recon`` (encode each incoming frame, decode, synthesize with the incoming f0
and loudness: hear the network go from noise to the input), ``knobs`` (the normal engine, driven
by OSC/MIDI, with the current decoder), ``mix`` (recon plus the dry input, delayed to line up).
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np

from instrument.dissect.trainer import OnlineTrainer, Snapshot, floor_log
from instrument.errors import ConfigError, describe

log = logging.getLogger(__name__)

LISTEN_MODES = ("recon", "knobs", "mix")
MAX_LOG = math.log(4.0)  # clamp decoded log amplitudes before exp (an untrained net is wild)


def check_listen(mode: str) -> str:
    if mode not in LISTEN_MODES:
        raise ConfigError(describe("listen mode", mode, ", ".join(LISTEN_MODES),
                                   "send /inst/dissect/listen s recon|knobs|mix"))
    return mode


class StreamFrames:
    """Incremental analysis of a hop stream (``corpus.features.StreamAnalyzer``):
    ``process(hop)`` returns the ``Frames`` this hop completes (often one, sometimes none);
    frame t comes ``delay_samples`` after its centre sample ``t * hop``."""

    def __init__(self, mode: str, sample_rate: int):
        from instrument.corpus import features as feat

        self.mode = mode
        self.sample_rate = int(sample_rate)
        self.hop = feat.HOP_SAMPLES
        self._stream = feat.StreamAnalyzer(self.sample_rate, mode)
        self.delay_samples = int(self._stream.latency_samples)

    def process(self, hop: np.ndarray):
        return self._stream.process(hop)


class ReconSynth:
    """Decoded log frames + f0 + loudness -> audio, with the engine's synthesizers."""

    def __init__(self, mode: str, sample_rate: int, seed: int = 0):
        from instrument.corpus import features as feat
        from instrument.engine.synth import HarmonicSynth, NoiseSynth

        self.mode = mode
        self.sample_rate = int(sample_rate)
        self.hop = feat.HOP_SAMPLES
        self.floor = floor_log()
        self.amp_floor = feat.AMP_FLOOR
        self.n_h = feat.N_HARMONICS
        max_hz = 0.45 * self.sample_rate
        if mode == "pitched":
            edges = feat.noise_band_edges_hz(self.sample_rate, feat.N_NOISE_BANDS)
            self.harm = HarmonicSynth(self.sample_rate, self.hop, 1, self.n_h, max_hz)
            self.noise = NoiseSynth(self.sample_rate, self.hop, edges, max_hz, seed)
        else:  # linear bins -> noise bands one bin wide: filtered noise with that spectrum
            n_fft = feat.N_FFT
            f = np.arange(n_fft // 2 + 1) * self.sample_rate / n_fft
            edges = np.concatenate([[0.0], (f[:-1] + f[1:]) / 2, [self.sample_rate / 2]])
            self.noise = NoiseSynth(self.sample_rate, self.hop, edges, max_hz, seed)
            # band RMS for a unit-power magnitude frame (sum mag^2 = 1)
        self._zero = np.zeros(1, np.float32)
        self._slot = np.zeros(1, np.int64)
        self._sounding = False
        self.f0_hz = 220.0

    def frame(self, log_frame: np.ndarray, f0_hz: float, voiced: bool,
              loudness_db: float) -> np.ndarray:
        """One hop of audio for one decoded frame (NaN-safe, unit power times loudness)."""
        y = np.nan_to_num(np.asarray(log_frame, np.float64), nan=self.floor,
                          posinf=MAX_LOG, neginf=self.floor)
        amp = np.maximum(np.exp(np.clip(y, self.floor, MAX_LOG)) - self.amp_floor, 0.0)
        gain = 10.0 ** (min(max(float(loudness_db), -120.0), 6.0) / 20.0) \
            if math.isfinite(loudness_db) else 0.0
        if self.mode == "pitched":
            h, n = amp[:self.n_h], amp[self.n_h:]
            if voiced and f0_hz > 0:
                self.f0_hz = float(f0_hz)
            k = np.arange(1, self.n_h + 1)
            h = np.where(k * self.f0_hz < self.sample_rate / 2, h, 0.0) if voiced \
                else np.zeros_like(h)
            p = float(np.sum(h ** 2) / 2 + np.sum(n ** 2))
            s = gain / math.sqrt(p) if p > 1e-12 else 0.0
            if not self._sounding and voiced:
                self.harm.start(0, self.f0_hz)
                self._sounding = True
            out = self.harm.process(self._slot, (h * s)[None, :].astype(np.float32),
                                    np.array([self.f0_hz]))
            out = out + self.noise.process((n * s)[None, :].astype(np.float32),
                                           np.ones(1, np.float32))
        else:
            p = float(np.sum(amp ** 2))
            s = gain / math.sqrt(p) if p > 1e-12 else 0.0
            # a unit-power magnitude frame has RMS sqrt(2 * sum mag^2) / n_fft-ish; band RMS
            # is the bin's share of the power
            out = self.noise.process((amp * s)[None, :].astype(np.float32),
                                     np.ones(1, np.float32))
        return np.nan_to_num(out.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def stream_lsd_db(rec: np.ndarray, x: np.ndarray, f0_hz: np.ndarray, ok: np.ndarray,
                  mode: str, sample_rate: int, floor: float) -> np.ndarray:
    """Per-frame LSD (dB) of the played reconstructions ``rec`` against the stream frames
    ``x``, as :func:`instrument.model.metrics.lsd_db` defines it for one frame (RMS over the
    audible bins below Nyquist); NaN where ``ok`` is False (silent or unvoiced) or no bin is
    audible. The RMS of these over an interval is ``lsd_db`` over those frames."""
    from instrument.dissect.trainer import valid_mask
    from instrument.model.metrics import LOG_TO_DB

    t = np.maximum(np.asarray(x, np.float64), floor)
    r = np.maximum(np.asarray(rec, np.float64), floor)
    aud = valid_mask(mode, f0_hz, t.shape[1], sample_rate) & ((t - floor) * LOG_TO_DB >= 20.0)
    n = aud.sum(axis=1)
    d2 = (((r - t) * LOG_TO_DB) ** 2 * aud).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.sqrt(d2 / n)
    return np.where(np.asarray(ok, bool) & (n > 0), d, np.nan)


class FrameHistory:
    """Bounded per-frame history: at most ``max_rows`` rows, whatever the stream's length.

    Each row stands for ``stride`` consecutive stream frames: it keeps the first frame's input
    and reconstruction (float16, for the spectrograms), its stream index and snapshot step,
    and the sum of squared per-frame LSD and the count of frames with an LSD over all of the
    row's frames (so an interval's RMS LSD is exact up to row boundaries). When the rows are
    full, pairs merge and ``stride`` doubles: a long performance keeps its whole length at a
    coarser time resolution, and memory stays bounded (``max_rows`` x F x 4 bytes + a little).
    """

    def __init__(self, n_feat: int, max_rows: int | None = None,
                 budget_bytes: int = 8 << 20):
        if max_rows is None:  # two float16 rows of n_feat per frame
            max_rows = budget_bytes // (4 * int(n_feat))
        self.max_rows = max(64, int(max_rows) // 2 * 2)
        self.n_feat = int(n_feat)
        self.stride = 1
        self.frames = 0  # stream frames added so far
        self._fill = 0   # frames in the newest row
        self.in_frames: list[np.ndarray] = []
        self.out_frames: list[np.ndarray] = []
        self.index: list[int] = []
        self.step: list[int] = []
        self.lsd_sq: list[float] = []
        self.lsd_n: list[int] = []

    def __len__(self) -> int:
        return len(self.index)

    def add(self, x: np.ndarray, rec: np.ndarray, lsd: np.ndarray, step: int) -> None:
        """Frames ``x`` (N, F), their reconstructions and per-frame LSD (N,), NaN-tolerant."""
        for i in range(len(x)):
            if self._fill == 0:
                self.in_frames.append(np.asarray(x[i], np.float16))
                self.out_frames.append(np.asarray(rec[i], np.float16))
                self.index.append(self.frames)
                self.step.append(int(step))
                self.lsd_sq.append(0.0)
                self.lsd_n.append(0)
            d = float(lsd[i])
            if math.isfinite(d):
                self.lsd_sq[-1] += d * d
                self.lsd_n[-1] += 1
            self.frames += 1
            self._fill += 1
            if self._fill == self.stride:
                self._fill = 0
                if len(self.index) >= self.max_rows:
                    self._halve()

    def _halve(self) -> None:
        for name in ("in_frames", "out_frames", "index", "step"):
            setattr(self, name, getattr(self, name)[::2])
        sq, n = self.lsd_sq, self.lsd_n
        self.lsd_sq = [sq[i] + sq[i + 1] for i in range(0, len(sq), 2)]
        self.lsd_n = [n[i] + n[i + 1] for i in range(0, len(n), 2)]
        self.stride *= 2


class Dissection:
    """The per-hop pipeline: analysis -> trainer inbox, snapshot -> output hop."""

    def __init__(self, trainer: OnlineTrainer, listen: str = "recon", dry_gain: float = 0.5,
                 seed: int = 0, out_gain_db: float = -3.0):
        self.trainer = trainer
        self.mode = trainer.mode
        self.sample_rate = trainer.sample_rate
        self.listen = check_listen(listen)
        self.dry_gain = float(dry_gain)
        self.out_gain = 10.0 ** (out_gain_db / 20.0)
        self.frames = StreamFrames(self.mode, self.sample_rate)
        self.hop = self.frames.hop
        self.synth = ReconSynth(self.mode, self.sample_rate, seed)
        self.snap: Snapshot = trainer.snapshot
        self.label = ""
        self._queue: list[tuple[np.ndarray, float, bool, float]] = []
        delay = self.frames.delay_samples
        self._dry = np.zeros(delay + self.hop, np.float32)
        self._silent = np.full(trainer.n_feat, floor_log(), np.float32)
        self.engine = None
        self.swaps = 0
        self.hops_done = 0
        # bounded per-frame history for the picture sheet and the figures
        self.history = FrameHistory(trainer.n_feat)
        self.keep_history = True
        # the stream LSD of about the last second (for the live status line)
        self._recent_sq = np.full(max(1, round(self.sample_rate / self.hop)), np.nan)
        self._recent_pos = 0

    # ----------------------------------------------------------------- listen: knobs
    def knobs_engine(self):
        """The normal engine playing the current decoder (created on first use)."""
        if self.engine is None:
            from instrument.engine.engine import Engine

            self.engine = Engine(self.snap.as_decoder(), self.sample_rate)
        return self.engine

    def set_listen(self, mode: str) -> None:
        self.listen = check_listen(mode)

    # --------------------------------------------------------------------- one hop
    def _take_snapshot(self) -> None:
        snap = self.trainer.snapshot  # one reference read: never waits
        if snap is self.snap:
            return
        self.snap = snap
        self.swaps += 1
        if self.engine is not None:
            self.engine.swap_decoder(snap.as_decoder())

    def process_hop(self, hop: np.ndarray) -> np.ndarray:
        """One input hop (hop_samples,) -> one output hop, float32, never NaN."""
        return self.process_block(hop)

    def process_block(self, audio: np.ndarray) -> np.ndarray:
        """A whole number of input hops -> as many output hops (analysis and the networks
        run once per block, the synthesis once per hop). A new snapshot is taken up at the
        block's start, which is a hop boundary."""
        x = np.nan_to_num(np.asarray(audio, np.float32).reshape(-1), nan=0.0, posinf=0.0,
                          neginf=0.0)
        h = self.hop
        n_hops = len(x) // h
        if n_hops * h != len(x):
            raise ConfigError(describe("dissect block length", len(x),
                                       f"a multiple of the hop ({h} samples)",
                                       "feed whole hops"))
        self._take_snapshot()
        fr = self.frames.process(x)
        if fr is not None and len(fr.features):
            self.trainer.push(fr.features, fr.f0_hz, fr.voiced, fr.loudness_db, self.label)
            for i in range(len(fr.features)):
                self._queue.append((fr.features[i], float(fr.f0_hz[i]), bool(fr.voiced[i]),
                                    float(fr.loudness_db[i])))
        self.hops_done += n_hops
        if self.engine is not None and self.listen != "knobs":
            self.engine.process(len(x))  # keeps up with OSC/MIDI; heard in "knobs" mode
        if self.listen == "knobs":  # the frames still go through the net: LSD, history
            if self._queue:
                self._reconstruct(self._queue[:n_hops])
            self._queue.clear()
            self._dry[:] = 0.0
            return np.clip(self.knobs_engine().process(len(x)), -1.0, 1.0).astype(np.float32)
        out = np.empty(len(x), np.float32)
        take = self._queue[:n_hops]
        del self._queue[:n_hops]
        recs = self._reconstruct(take) if take else None
        for i in range(n_hops):
            if i < len(take):
                _, f0, voiced, loud = take[i]
                y = self.synth.frame(recs[i], f0, voiced, loud)
            else:  # the analysis is still filling its window
                y = self.synth.frame(self._silent, 0.0, False, -120.0)
            self._dry = np.roll(self._dry, -h)
            self._dry[-h:] = x[i * h:(i + 1) * h]
            if self.listen == "mix":
                y = (1.0 - self.dry_gain) * y + self.dry_gain * self._dry[:h]
            out[i * h:(i + 1) * h] = y
        return np.clip(out * self.out_gain, -1.0, 1.0).astype(np.float32)

    def _reconstruct(self, take: list) -> np.ndarray:
        xs = np.stack([t[0] for t in take])
        f0 = np.array([t[1] for t in take], np.float32)
        rec = self.snap.reconstruct(xs, f0)
        ok = np.array([(voiced or self.mode != "pitched") and loud >= self.trainer.gate_db
                       for _, _, voiced, loud in take])
        d = stream_lsd_db(rec, xs, f0, ok, self.mode, self.sample_rate, self.synth.floor)
        for v in d:  # a fixed ring: no growth
            self._recent_sq[self._recent_pos] = v * v
            self._recent_pos = (self._recent_pos + 1) % len(self._recent_sq)
        if self.keep_history:
            self.history.add(xs, rec, d, self.snap.step)
        return rec

    @property
    def recent_lsd_db(self) -> float:
        """The stream LSD (RMS of the per-frame LSD, dB) over about the last second."""
        v = self._recent_sq[np.isfinite(self._recent_sq)]
        return float(np.sqrt(v.mean())) if len(v) else float("nan")


def cut_now(trainer: OnlineTrainer, name: str, out_folder: str | Path | None = None) -> Path:
    """Write the trainer's current state as a playable model (``instrument cut`` format).

    The calibration (knob square, corpus points) is computed from the replay memory.
    """
    import torch

    from instrument.model import cut as cutmod
    from instrument.model.calibrate import calibrate
    from instrument.model.modelfile import MODELS_DIR
    from instrument.model.train import CHECKPOINT_FORMAT

    if not name or "/" in name or name.startswith("."):
        raise ConfigError(describe("model name", name, "a plain folder name",
                                   "send e.g. /inst/dissect/cut s mysound"))
    x, f0, labels = trainer.memory()
    if len(x) == 0:
        raise ConfigError(describe("cut", "an empty replay memory", "at least one frame",
                                   "let the stream play a moment first"))
    with trainer._lock:
        snap = trainer._make_snapshot(record=False)
        state = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
        step = trainer.step_count
    codes = snap.encode_raw(x, f0)
    cal = calibrate(codes, labels, seed=trainer.seed)
    spec = {**trainer.spec, "sample_rate": trainer.sample_rate,
            "hop_samples": trainer.hop_samples}
    ck = {"format": CHECKPOINT_FORMAT, "spec": spec, "step": step, "complete": False,
          "model": state, "calibration": cal,
          "corpus": {"source": "dissect stream", "frames": int(len(x)),
                     "labels": sorted(set(labels)),
                     "licence": "the stream's licence (not recorded)"},
          "figures": {"lsd_db": round(float(snap.lsd_db), 4) if math.isfinite(snap.lsd_db)
                      else None, "loss": round(float(snap.loss), 5)
                      if math.isfinite(snap.loss) else None}}
    out = Path(out_folder) if out_folder is not None else MODELS_DIR / name
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "dissect.pt"
        torch.save(ck, path)
        return cutmod.cut(path, out, name)
