"""Online training: a fresh autoencoder that learns from a stream of analysed frames.

The network, its loss and its defaults are those of ``instrument train``
(:mod:`instrument.model.nets`, :mod:`instrument.model.train`); only the data differs: frames
arrive one hop at a time and go into a bounded replay memory (a ring of the most recent
frames plus a reservoir sample of everything older, so the network does not forget at once).
Feature normalisation is a running mean/std over every accepted frame.

Threads: :meth:`OnlineTrainer.push` (any thread, never blocks) hands frames over through a
queue; the trainer thread (``torch.set_num_threads(1)``) drains it, steps, and publishes an
immutable :class:`Snapshot` every ``snapshot_every`` steps by a plain reference swap. Readers
(the audio side) take ``trainer.snapshot`` and never wait. :meth:`OnlineTrainer.step` is the
same work synchronously, for deterministic renders.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from instrument.errors import ConfigError, describe
from instrument.model.calibrate import calibrate
from instrument.model.metrics import lsd_db
from instrument.model.modelfile import MLP, Decoder
from instrument.model.nets import recon_loss
from instrument.model.train import TrainConfig, build_model

STD_FLOOR = 0.3  # log units: keeps early, nearly constant bins from exploding the loss


def n_features(mode: str) -> int:
    from instrument.corpus.features import N_FFT, N_HARMONICS, N_NOISE_BANDS

    return N_HARMONICS + N_NOISE_BANDS if mode == "pitched" else N_FFT // 2 + 1


def floor_log() -> float:
    from instrument.corpus.features import AMP_FLOOR

    return float(math.log(AMP_FLOOR))


def valid_mask(mode: str, f0_hz: np.ndarray, n_feat: int, sample_rate: int) -> np.ndarray:
    """(N, F) bool: False for harmonics at or above Nyquist (same rule as training)."""
    valid = np.ones((len(f0_hz), n_feat), bool)
    if mode == "pitched":
        from instrument.corpus.features import N_HARMONICS

        k = np.arange(1, N_HARMONICS + 1)
        valid[:, :N_HARMONICS] = k[None, :] * np.asarray(f0_hz)[:, None] < sample_rate / 2
    return valid


def log2_f0(mode: str, f0_hz: np.ndarray) -> np.ndarray:
    if mode != "pitched":
        return np.zeros(len(f0_hz), np.float32)
    return np.log2(np.maximum(np.asarray(f0_hz, np.float64), 1.0) / 440.0).astype(np.float32)


@dataclass(frozen=True)
class Snapshot:
    """The network at one moment, as numpy: never changed after it is published."""

    step: int
    loss: float
    lsd_db: float            # reconstruction distance on the latest stream frames
    mode: str
    sample_rate: int
    hop_samples: int
    encoder: MLP             # input (features - mean) / std [+ log2 f0]
    decoder: MLP             # input code [+ log2 f0], output raw log features
    mean: np.ndarray
    std: np.ndarray
    raw_lo: np.ndarray       # knob square calibration from the replay memory
    raw_hi: np.ndarray
    generation: int = 0      # increments on reset

    @property
    def pitched(self) -> bool:
        return self.mode == "pitched"

    def encode_raw(self, features: np.ndarray, f0_hz: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, np.float32) - self.mean) / self.std
        if self.pitched:
            x = np.concatenate([x, log2_f0(self.mode, f0_hz)[:, None]], axis=1)
        return self.encoder(x)

    def decode_raw(self, code: np.ndarray, f0_hz: np.ndarray) -> np.ndarray:
        z = np.asarray(code, np.float32)
        if self.pitched:
            z = np.concatenate([z, log2_f0(self.mode, f0_hz)[:, None]], axis=1)
        return self.decoder(z)

    def reconstruct(self, features: np.ndarray, f0_hz: np.ndarray) -> np.ndarray:
        """Log features through encoder and decoder (what 'recon' mode plays)."""
        return self.decode_raw(self.encode_raw(features, f0_hz), f0_hz)

    def as_decoder(self, name: str = "dissect") -> Decoder:
        return SnapshotDecoder(self, name)


class SnapshotDecoder(Decoder):
    """A :class:`modelfile.Decoder` built from a snapshot in memory (no folder, no check)."""

    def __init__(self, snap: Snapshot, name: str = "dissect"):  # noqa: D107 (no super: no folder)
        from instrument.corpus.features import (
            HOP_SAMPLES,
            N_FFT,
            N_HARMONICS,
            N_NOISE_BANDS,
            noise_band_edges_hz,
        )

        self.folder = None
        self.name = name
        self.mode = snap.mode
        self.sample_rate = snap.sample_rate
        self.hop_samples = HOP_SAMPLES
        self.n_fft = N_FFT
        self.pitched = snap.pitched
        self.n_harmonics = N_HARMONICS if snap.pitched else 0
        self.noise_band_edges_hz = noise_band_edges_hz(snap.sample_rate, N_NOISE_BANDS) \
            if snap.pitched else np.zeros(0)
        self.n_noise_bands = max(0, len(self.noise_band_edges_hz) - 1)
        self.raw_lo = np.asarray(snap.raw_lo, np.float32)
        self.raw_hi = np.asarray(snap.raw_hi, np.float32)
        self.latency_samples = self.hop_samples
        self.net = snap.decoder
        self.snapshot = snap
        self.meta = {"name": name, "mode": snap.mode, "sample_rate": snap.sample_rate,
                     "hop_samples": self.hop_samples, "n_fft": self.n_fft,
                     "n_harmonics": self.n_harmonics,
                     "noise_band_edges_hz": [float(v) for v in self.noise_band_edges_hz],
                     "latent": {"raw_lo": self.raw_lo.tolist(), "raw_hi": self.raw_hi.tolist(),
                                "corpus_points": [], "corpus_labels": []},
                     "latency_samples": {"decoder": self.latency_samples, "encoder": 0}}


@dataclass
class Progress:
    step: int
    loss: float
    lsd_db: float
    frames_seen: int
    wall_s: float


@dataclass
class _Memory:
    """Replay memory: ``recent`` ring + ``reservoir`` of older frames (trainer thread only)."""

    n_feat: int
    recent_frames: int
    reservoir_frames: int
    seed: int
    feats: np.ndarray = field(init=False)
    f0: np.ndarray = field(init=False)
    label: np.ndarray = field(init=False)
    res_feats: np.ndarray = field(init=False)
    res_f0: np.ndarray = field(init=False)
    res_label: np.ndarray = field(init=False)
    n_recent: int = 0
    n_res: int = 0
    seen: int = 0  # frames that have left the ring (reservoir candidates)
    pos: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed + 7919)
        self.feats = np.zeros((self.recent_frames, self.n_feat), np.float32)
        self.f0 = np.zeros(self.recent_frames, np.float32)
        self.label = np.zeros(self.recent_frames, np.int32)
        self.res_feats = np.zeros((self.reservoir_frames, self.n_feat), np.float32)
        self.res_f0 = np.zeros(self.reservoir_frames, np.float32)
        self.res_label = np.zeros(self.reservoir_frames, np.int32)

    def add(self, feats: np.ndarray, f0: np.ndarray, label: int) -> None:
        for x, f in zip(feats, f0, strict=True):
            if self.n_recent == self.recent_frames:  # the oldest leaves the ring
                old = self.pos
                self._to_reservoir(self.feats[old], self.f0[old], int(self.label[old]))
            self.feats[self.pos] = x
            self.f0[self.pos] = f
            self.label[self.pos] = label
            self.pos = (self.pos + 1) % self.recent_frames
            self.n_recent = min(self.n_recent + 1, self.recent_frames)

    def _to_reservoir(self, x: np.ndarray, f: float, label: int) -> None:
        self.seen += 1
        if self.n_res < self.reservoir_frames:
            j = self.n_res
            self.n_res += 1
        else:
            j = int(self.rng.integers(0, self.seen))
            if j >= self.reservoir_frames:
                return
        self.res_feats[j] = x
        self.res_f0[j] = f
        self.res_label[j] = label

    def __len__(self) -> int:
        return self.n_recent + self.n_res

    def latest(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        n = min(n, self.n_recent)
        idx = (self.pos - n + np.arange(n)) % self.recent_frames
        return self.feats[idx], self.f0[idx]

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Half from the ring, half from the reservoir (all from the ring while it is empty)."""
        n_res = batch // 2 if self.n_res else 0
        i = self.rng.integers(0, self.n_recent, batch - n_res)
        j = self.rng.integers(0, max(1, self.n_res), n_res)
        return (np.concatenate([self.feats[i], self.res_feats[j]]),
                np.concatenate([self.f0[i], self.res_f0[j]]))

    def all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.concatenate([self.feats[:self.n_recent], self.res_feats[:self.n_res]]),
                np.concatenate([self.f0[:self.n_recent], self.res_f0[:self.n_res]]),
                np.concatenate([self.label[:self.n_recent], self.res_label[:self.n_res]]))


class OnlineTrainer:
    """Learns a fresh (seeded) autoencoder from pushed frames; publishes :class:`Snapshot`s.

    ``mode`` is "pitched" or "unpitched" (the same features and decoder as ``instrument
    train``). ``replay_frames`` bounds the memory (a quarter ring of recent frames, the rest a
    reservoir). Controls (any thread): :meth:`set_lr`, :meth:`pause`, :meth:`freeze`
    (no steps and no new frames: the state stays put), :meth:`reset` (fresh weights).
    """

    def __init__(self, mode: str, sample_rate: int, seed: int = 0, lr: float = 3e-3,
                 replay_frames: int = 8192, batch: int = 64, snapshot_every: int = 10,
                 gate_db: float = -60.0, lsd_frames: int = 64,
                 config: TrainConfig | None = None):
        if mode not in ("pitched", "unpitched"):
            raise ConfigError(describe("dissect mode", mode, "pitched, unpitched",
                                       "pick one (or 'auto' on the command line)"))
        self._check_lr(lr)
        self.mode = mode
        self.sample_rate = int(sample_rate)
        self.config = config or TrainConfig()
        from instrument.corpus.features import HOP_SAMPLES

        self.hop_samples = HOP_SAMPLES
        self.n_feat = n_features(mode)
        self.floor = floor_log()
        self.seed = int(seed)
        self.lr = float(lr)
        self.batch = int(batch)
        self.snapshot_every = max(1, int(snapshot_every))
        self.gate_db = float(gate_db)
        self.lsd_frames = int(lsd_frames)
        recent = max(64, replay_frames // 4)
        self._mem = _Memory(self.n_feat, recent, max(64, replay_frames - recent), seed)
        self._labels: list[str] = []
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._n = 0
        self._sum = np.zeros(self.n_feat, np.float64)
        self._sumsq = np.zeros(self.n_feat, np.float64)
        self._lock = threading.Lock()  # model + optimiser (trainer thread and controls)
        self.paused = False
        self.frozen = False
        self.generation = 0
        self.step_count = 0
        self.loss = float("nan")
        self.history: list[Progress] = []  # bounded: see _record_progress
        self.max_history = 2048
        self._history_stride = 1
        self._snapshots = 0
        self.code_moments: list[tuple[int, np.ndarray, list[str]]] = []
        self._moment_steps: set[int] = set()
        self._t0 = time.perf_counter()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listeners: list = []  # callables(Progress), called from the trainer thread
        self._build(self.seed)
        self.snapshot: Snapshot = self._make_snapshot()

    # ---------------------------------------------------------------- set-up and controls
    @staticmethod
    def _check_lr(lr: float) -> None:
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) \
                or not 0 < lr <= 1:
            raise ConfigError(describe("learning rate", lr, "0 < lr <= 1",
                                       "send e.g. 0.003"))

    def _build(self, seed: int) -> None:
        c = self.config
        spec = {"mode": self.mode, "n_features": self.n_feat, "enc_hidden": list(c.enc_hidden),
                "dec_hidden": list(c.dec_hidden), "activation": c.activation}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = build_model(spec)
        self.spec = spec
        self._set_norm()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self._gen = torch.Generator().manual_seed(seed)

    def set_lr(self, lr: float) -> None:
        self._check_lr(lr)
        self.lr = float(lr)
        with self._lock:
            for g in self.opt.param_groups:
                g["lr"] = self.lr

    def pause(self, on: bool = True) -> None:
        self.paused = bool(on)

    def freeze(self, on: bool = True) -> None:
        self.frozen = bool(on)

    def reset(self, seed: int | None = None) -> None:
        """Fresh weights (seed+generation unless given); the memory and statistics stay."""
        with self._lock:
            self.generation += 1
            self._build(self.seed + self.generation if seed is None else int(seed))
            self.step_count = 0
            self.loss = float("nan")
            self.snapshot = self._make_snapshot()

    # ------------------------------------------------------------------------- data in
    def push(self, features: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray,
             loudness_db: np.ndarray, label: str = "") -> None:
        """Hand over analysed frames (never blocks). Silent, unvoiced (pitched) or non-finite
        frames are not learned from."""
        if self.frozen or len(features) == 0:
            return
        self._inbox.put((np.array(features, np.float32), np.array(f0_hz, np.float32),
                         np.array(voiced, bool), np.array(loudness_db, np.float32), label))

    def _drain(self) -> None:
        while True:
            try:
                x, f0, voiced, loud, label = self._inbox.get_nowait()
            except queue.Empty:
                return
            ok = np.isfinite(loud) & (loud >= self.gate_db) & np.all(np.isfinite(x), axis=1)
            if self.mode == "pitched":
                ok &= voiced & (f0 > 0)
            if not np.any(ok):
                continue
            x, f0 = x[ok], f0[ok]
            if label not in self._labels:
                self._labels.append(label)
            self._mem.add(x, f0, self._labels.index(label))
            self._n += len(x)
            self._sum += x.sum(axis=0, dtype=np.float64)
            self._sumsq += (x.astype(np.float64) ** 2).sum(axis=0)

    def _norm(self) -> tuple[np.ndarray, np.ndarray]:
        if self._n == 0:
            return (np.full(self.n_feat, self.floor, np.float32), np.ones(self.n_feat, np.float32))
        mean = self._sum / self._n
        var = np.maximum(self._sumsq / self._n - mean ** 2, 0.0)
        return mean.astype(np.float32), np.maximum(np.sqrt(var), STD_FLOOR).astype(np.float32)

    def _set_norm(self) -> None:
        mean, std = self._norm()
        self.model.set_normalisation(mean, std)

    # -------------------------------------------------------------------------- steps
    @property
    def frames_seen(self) -> int:
        return self._n

    def ready(self) -> bool:
        return len(self._mem) >= 16

    def step(self) -> bool:
        """Drain the inbox and take one optimiser step; False if paused, frozen or empty."""
        self._drain()
        if self.paused or self.frozen or not self.ready():
            return False
        with self._lock:
            self._set_norm()
            if self.step_count == 0 and 0 not in self._moment_steps:
                self._maybe_record_codes(self.snapshot)  # the untrained square
            x, f0 = self._mem.sample(self.batch)
            valid = valid_mask(self.mode, f0, self.n_feat, self.sample_rate)
            loss, _ = recon_loss(self.model, torch.from_numpy(x),
                                 torch.from_numpy(log2_f0(self.mode, f0)),
                                 torch.from_numpy(valid.astype(np.float32)), self.floor,
                                 self.config.code_noise, self.config.floor_weight, self._gen)
            lv = float(loss.detach())
            if not math.isfinite(lv):  # never publish NaN weights: start again, gentler
                self.lr *= 0.5
                self._build(self.seed + 1000 + self.step_count)
                return False
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.opt.step()
            self.step_count += 1
            self.loss = lv if math.isnan(self.loss) else 0.9 * self.loss + 0.1 * lv
            if self.step_count % self.snapshot_every == 0:
                self.snapshot = self._make_snapshot()
        return True

    def _make_snapshot(self, record: bool = True) -> Snapshot:
        """Export the weights as numpy (call with the lock held, or before threads start);
        ``record`` adds it to the history and tells the listeners."""
        m = self.model
        enc, dec = m.numpy_encoder(), m.numpy_decoder()
        mean = m.mean.numpy().copy()
        std = m.std.numpy().copy()
        raw_lo, raw_hi = np.full(2, -1.0, np.float32), np.full(2, 1.0, np.float32)
        lsd = float("nan")
        snap = Snapshot(self.step_count, self.loss, lsd, self.mode, self.sample_rate,
                        self.hop_samples, enc, dec, mean, std, raw_lo, raw_hi, self.generation)
        if self._mem.n_recent:
            x, f0 = self._mem.latest(self.lsd_frames)
            rec = snap.reconstruct(x, f0)
            lsd = lsd_db(rec, x, valid_mask(self.mode, f0, self.n_feat, self.sample_rate),
                         self.floor)
            xa, fa, _ = self._mem.all()
            stride = max(1, len(xa) // 512)
            codes = snap.encode_raw(xa[::stride], fa[::stride])
            cal = calibrate(codes, ["x"] * len(codes), max_points=1)
            raw_lo = np.asarray(cal["raw_lo"], np.float32)
            raw_hi = np.asarray(cal["raw_hi"], np.float32)
            snap = Snapshot(self.step_count, self.loss, lsd, self.mode, self.sample_rate,
                            self.hop_samples, enc, dec, mean, std, raw_lo, raw_hi,
                            self.generation)
        if not record:
            return snap
        p = Progress(self.step_count, self.loss, lsd, self._n, time.perf_counter() - self._t0)
        self._record_progress(p)
        self._maybe_record_codes(snap)
        for fn in list(self.listeners):
            try:
                fn(p)
            except Exception:  # a listener must not stop training
                pass
        return snap

    def _record_progress(self, p: Progress) -> None:
        """Keep every ``_history_stride``-th snapshot's figures; at ``max_history`` entries
        drop every other one and double the stride, so a long session stays bounded."""
        self._snapshots += 1
        if (self._snapshots - 1) % self._history_stride:
            return
        self.history.append(p)
        if len(self.history) >= self.max_history:
            self.history = self.history[::2]
            self._history_stride *= 2

    def finish(self) -> Snapshot:
        """The final state (call when the stream ends, with the trainer thread stopped): a
        snapshot of the current weights in the history, and its codes in ``code_moments``,
        so the sheet always shows where the learning got to."""
        with self._lock:
            if self.snapshot.step != self.step_count or not self.history \
                    or self.history[-1].step != self.step_count:
                self._snapshots = 0  # this one is kept whatever the stride
                self.snapshot = self._make_snapshot()
            self._maybe_record_codes(self.snapshot, force=True)
        return self.snapshot

    def _maybe_record_codes(self, snap: Snapshot, force: bool = False) -> None:
        """Keep the memory's codes at steps 0, 1x, 4x, 16x, ... snapshot_every (for the
        sheet); ``force``: at this snapshot whatever its step (the final state)."""
        s = snap.step // self.snapshot_every
        if not self._mem.n_recent or any(m[0] == snap.step for m in self.code_moments):
            return
        if not force and (s in self._moment_steps or (s & (s - 1))
                          or (s and math.log2(s) % 2)):
            return
        self._moment_steps.add(s)
        xa, fa, la = self._mem.all()
        stride = max(1, len(xa) // 400)
        codes = snap.encode_raw(xa[::stride], fa[::stride])
        knob = np.clip((codes - snap.raw_lo) / (snap.raw_hi - snap.raw_lo), 0, 1)
        self.code_moments.append((snap.step, knob, [self._labels[i] for i in la[::stride]]))

    def memory(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(features, f0_hz, labels) of the replay memory (for cutting)."""
        xa, fa, la = self._mem.all()
        return xa.copy(), fa.copy(), [self._labels[i] for i in la]

    # ------------------------------------------------------------------------ threads
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dissect-trainer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        from instrument.dissect.threads import limit_blas_threads

        torch.set_num_threads(1)
        limit_blas_threads(1)
        while not self._stop.is_set():
            if not self.step():
                time.sleep(0.005)
