"""Phase reconstruction for the unpitched mode: magnitude frames in, audio out, in real time.

The decoder gives one 513-bin ``|STFT|`` frame per hop (n_fft 1024, periodic Hann, hop 256).
:class:`PhaseReconstructor` gives each frame a phase with real-time phase gradient heuristic
integration (RTPGHI; Průša & Holighaus 2017), :class:`OverlapAdd` turns complex frames into
samples, and :class:`UnpitchedSynth` does both for a bank of voices.

STFT convention used everywhere here (and by :func:`stft`): frame ``n`` is centred on
sample ``n * hop_samples``, the window is the periodic Hann of length ``n_fft`` with its peak
at the frame centre, and the phase is referenced to that centre (a sinusoid of ``w``
rad/sample advances by ``w * hop_samples`` per frame). No normalisation: a full-scale
sinusoid of amplitude A peaks at ``A * n_fft / 4``.

RTPGHI in brief (derived for a Gaussian window ``exp(-pi t^2 / lam)``, ``lam = 0.25645 n_fft^2``
for Hann): with ``s = log|X|``,

* instantaneous frequency (rad/sample) ``w(m) = 2 pi m / n_fft + (n_fft / lam) ds/dm``;
* phase slope across bins (rad/bin) ``dphi/dm = -(lam / (hop n_fft)) ds/dn``
  (``ds/dn``: backward difference with no look-ahead, centred with one frame look-ahead);
* each significant bin (``|X| > tol * frame max``) takes its phase from the neighbour that a
  max-heap flood from the previous frame's bins reaches first: its own previous bin (time
  step, trapezoid of ``w``) or the bin next to it (frequency step, trapezoid of ``dphi/dm``);
  bins below the tolerance get a random phase.

* DC and Nyquist coefficients are rounded to the nearer of phase 0 and pi (they are real).

With one frame of look-ahead, RTPGHI's frame ``n`` is then refined by ``refine_iterations``
(default 2) Griffin-Lim passes over frames ``n`` and ``n + 1`` with the already played
frames fixed (RTISI-LA, Zhu, Beauregard & Wyse 2007, started from RTPGHI as in Průša &
Holighaus 2017); no added latency. Measured gains and what was tried and rejected (tolerance,
gamma, onset re-initialisation, refinement without look-ahead): bench/bench_phase.py.

The heap order is replaced by an exact vectorised equivalent: the bin a heap reaches first is
the one on the *widest path* (largest bottleneck magnitude) from a previous-frame source, and
on a 1-D chain of bins that is a prefix scan of clamp functions ``x -> min(hi, max(lo, x))``
(closed under composition), done in log2(n_bins) numpy steps for all voices at once. A
plain heap version is kept (``integration="heap"``) as the reference the tests compare with.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from instrument.errors import ConfigError, InstrumentError, describe

GAMMA_HANN = 0.25645  # lam / n_fft^2 of the Gaussian that best matches a Hann window
REFINE_ITERATIONS = 2  # default refinement passes with look-ahead (see bench/bench_phase.py)
_BLOCK = 1.0e9  # priority of a bin below tolerance: it blocks every path
_ISLAND = 1.0e4  # a bin with no significant predecessor is a source only below every real one
_TWO_PI = 2.0 * math.pi


class _RandomPhases:
    """Random phases in [0, 2 pi) without per-call generator cost: a fixed table read at a
    fresh random offset each call (only bins below tolerance use them)."""

    def __init__(self, shape: tuple[int, int], seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        n = shape[0] * shape[1]
        self._size = n
        self._table = self._rng.random(max(1 << 16, 4 * n)) * _TWO_PI
        self._offsets = self._rng.integers(0, len(self._table) - n, 4096)
        self._i = 0
        self._shape = shape

    def next(self) -> np.ndarray:
        """A (n_voices, n_bins) view of random phases (valid until the next call)."""
        self._i = (self._i + 1) % len(self._offsets)
        o = int(self._offsets[self._i])
        return self._table[o:o + self._size].reshape(self._shape)


def _wrap(phase: np.ndarray, tmp: np.ndarray) -> None:
    """phase <- phase mod 2 pi, in place (floor is much cheaper than fmod)."""
    np.multiply(phase, 1.0 / _TWO_PI, out=tmp)
    np.floor(tmp, out=tmp)
    tmp *= _TWO_PI
    phase -= tmp


def _polar(mag: np.ndarray, phase: np.ndarray, out: np.ndarray, tmp32: np.ndarray) -> None:
    """out (complex64) <- mag * exp(i phase); trigonometry in float32 (SIMD)."""
    np.copyto(tmp32, phase, casting="same_kind")
    np.cos(tmp32, out=out.real)
    np.sin(tmp32, out=out.imag)
    np.copyto(tmp32, mag, casting="same_kind")
    out *= tmp32


def hann_periodic(n_fft: int) -> np.ndarray:
    """Periodic Hann window of length ``n_fft`` (peak at index ``n_fft // 2``)."""
    k = np.arange(n_fft)
    return 0.5 - 0.5 * np.cos(_TWO_PI * k / n_fft)


def _check_sizes(n_fft: int, hop_samples: int) -> None:
    if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < 16 or n_fft % 2:
        raise ConfigError(describe("phase: n_fft", n_fft, "an even integer >= 16",
                                   "use the model's n_fft (1024)"))
    if (isinstance(hop_samples, bool) or not isinstance(hop_samples, int)
            or not 1 <= hop_samples <= n_fft // 2):
        raise ConfigError(describe("phase: hop_samples", hop_samples,
                                   f"an integer in [1, {n_fft // 2}] (n_fft / 2)",
                                   "use the model's hop (256); RTPGHI wants n_fft/hop >= 4"))


def stft(audio: np.ndarray, n_fft: int = 1024, hop_samples: int = 256) -> np.ndarray:
    """Complex STFT (T, n_fft//2+1) in this module's convention, zero-padded at both ends.

    Frame ``n`` is centred on sample ``n * hop_samples``; the last frame is the last one
    that overlaps the audio, ``T = (len(audio) - 1 + n_fft // 2) // hop_samples + 1``.
    """
    _check_sizes(n_fft, hop_samples)
    x = np.asarray(audio, dtype=np.float64)
    half = n_fft // 2
    n_frames = (max(len(x), 1) - 1 + half) // hop_samples + 1
    padded = np.zeros(half + (n_frames - 1) * hop_samples + n_fft)
    padded[half:half + len(x)] = x
    idx = np.arange(n_fft)[None, :] + hop_samples * np.arange(n_frames)[:, None]
    frames = padded[idx] * hann_periodic(n_fft)
    # Reference the phase to the frame centre: rotate by n_fft/2 before the FFT.
    return np.fft.rfft(np.roll(frames, -half, axis=1), axis=1)


def spectral_convergence_db(audio: np.ndarray, target_mag: np.ndarray, n_fft: int = 1024,
                            hop_samples: int = 256) -> float:
    """``20 log10(|| |STFT(audio)| - S ||_F / ||S||_F)`` over the frames both have, in dB."""
    mag = np.abs(stft(audio, n_fft, hop_samples))
    n = min(len(mag), len(target_mag))
    s = np.asarray(target_mag[:n], dtype=np.float64)
    num = np.linalg.norm(mag[:n] - s)
    den = max(float(np.linalg.norm(s)), 1e-300)
    return 20.0 * math.log10(max(num / den, 1e-300))


def _sanitize(mag: np.ndarray, out: np.ndarray, shape: tuple[int, int], what: str) -> bool:
    """Copy ``mag`` into ``out`` with NaN/inf/negative set to 0; True if anything was bad."""
    if not isinstance(mag, np.ndarray) or mag.shape != shape:
        got = getattr(mag, "shape", type(mag).__name__)
        raise InstrumentError(describe(f"{what}: magnitude frame shape", got,
                                       f"an array of shape {shape} (n_voices, n_bins)",
                                       "pass one n_fft//2+1-bin frame per voice"))
    np.copyto(out, mag, casting="unsafe")
    bad = not np.isfinite(out).all()
    if bad:
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(out, 0.0, out=out)
    return bad


class PhaseReconstructor:
    """Causal RTPGHI for ``n_voices`` independent magnitude streams.

    ``process(mag)`` takes one frame per voice, shape (n_voices, n_fft//2+1), linear
    magnitudes, and returns complex64 coefficients of the same shape. With
    ``lookahead_frames=1`` the time derivative is centred and the returned frame is the
    *previous* one (``latency_frames == 1``; the first call after a reset returns zeros).
    ``refine_iterations`` (look-ahead only; default 2 with look-ahead, 0 without): Griffin-Lim
    passes on the returned frame and the look-ahead frame, each about the cost of RTPGHI.
    """

    def __init__(self, n_fft: int = 1024, hop_samples: int = 256, n_voices: int = 1, *,
                 lookahead_frames: int = 0, tol: float = 1e-5, gamma: float = GAMMA_HANN,
                 integration: str = "scan", refine_iterations: int | None = None,
                 seed: int = 0) -> None:
        _check_sizes(n_fft, hop_samples)
        if isinstance(n_voices, bool) or not isinstance(n_voices, int) or n_voices < 1:
            raise ConfigError(describe("phase: n_voices", n_voices, "an integer >= 1",
                                       "pass the engine's max_voices"))
        if lookahead_frames not in (0, 1):
            raise ConfigError(describe("phase: lookahead_frames", lookahead_frames, "0 or 1",
                                       "use 0 (no added latency) or 1 (one hop more, better)"))
        if not (isinstance(tol, int | float) and 0.0 < tol < 1.0):
            raise ConfigError(describe("phase: tol", tol, "a number in (0, 1)",
                                       "use 1e-5 (-100 dB under the frame maximum)"))
        if refine_iterations is None:
            refine_iterations = REFINE_ITERATIONS if lookahead_frames else 0
        if (isinstance(refine_iterations, bool) or not isinstance(refine_iterations, int)
                or not 0 <= refine_iterations <= 16):
            raise ConfigError(describe("phase: refine_iterations", refine_iterations,
                                       "an integer in [0, 16]",
                                       f"use {REFINE_ITERATIONS} (each costs about one RTPGHI "
                                       "frame) or 0 (plain RTPGHI)"))
        if refine_iterations and not lookahead_frames:
            raise ConfigError(describe("phase: refine_iterations", refine_iterations,
                                       "0 when lookahead_frames is 0",
                                       "use lookahead_frames=1 (refinement without the "
                                       "look-ahead frame makes sustained notes worse)"))
        if integration not in ("scan", "heap"):
            raise ConfigError(describe("phase: integration", integration, "'scan' or 'heap'",
                                       "use 'scan' (fast); 'heap' is the slow reference"))
        self.n_fft = n_fft
        self.hop_samples = hop_samples
        self.n_voices = n_voices
        self.n_bins = n_fft // 2 + 1
        self.lookahead_frames = lookahead_frames
        self.latency_frames = lookahead_frames
        self.tol = float(tol)
        self.integration = integration
        self.refine_iterations = refine_iterations
        self.bad_frames = 0  # frames that held NaN/inf (set to 0 before use)
        lam = gamma * n_fft * n_fft
        self._w_scale = n_fft / lam  # (rad/sample) per unit of d log|X| / d bin
        self._dphi_scale = -lam / (hop_samples * n_fft)  # (rad/bin) per unit of d log|X| / d frame
        v, b = n_voices, self.n_bins
        self._bin_w = _TWO_PI * np.arange(b) / n_fft  # bin centre frequencies, rad/sample
        self._idx = np.broadcast_to(np.arange(b), (2 * v, b))
        f8 = np.float64
        # Per-voice state: previous frame (log-magnitude, inst. frequency, phase, significance).
        self._prev_log = np.zeros((v, b), f8)
        self._prev_w = np.zeros((v, b), f8)
        self._prev_phase = np.zeros((v, b), f8)
        self._prev_sig = np.zeros((v, b), bool)
        self._fresh = np.ones(v, bool)  # no previous frame yet
        # Look-ahead state: the frame waiting for its successor.
        self._pend_mag = np.zeros((v, b), f8)
        self._pend_log = np.zeros((v, b), f8)
        self._pend_valid = np.zeros(v, bool)
        # Work buffers.
        self._mag = np.zeros((v, b), f8)
        self._cur_mag = np.zeros((v, b), f8)
        self._log = np.zeros((v, b), f8)
        self._cur_log = np.zeros((v, b), f8)
        self._next_log = np.zeros((v, b), f8)
        self._fmax = np.zeros((v, 1), f8)
        self._floor = np.zeros((v, 1), f8)
        self._sig = np.zeros((v, b), bool)
        self._src = np.zeros((v, b), bool)
        self._dm = np.zeros((v, b), f8)
        self._w = np.zeros((v, b), f8)
        self._dn = np.zeros((v, b), f8)
        self._dphi = np.zeros((v, b), f8)
        self._cum = np.zeros((v, b), f8)
        self._tphase = np.zeros((v, b), f8)
        self._phase = np.zeros((v, b), f8)
        self._random = _RandomPhases((v, b), seed)
        self._f32 = np.zeros((v, b), np.float32)
        self._tmp = np.zeros((v, b), f8)
        self._lh = np.zeros((2, 2 * v, b), f8)
        self._lh2 = np.zeros((2, 2 * v, b), f8)
        self._restart = np.zeros((2 * v, b), bool)
        self._root = np.zeros((2 * v, b), np.intp)
        self._take_l = np.zeros((v, b), bool)
        self._rootv = np.zeros((v, b), np.intp)
        self._flat = np.zeros((v, b), np.intp)
        self._row_offset = (np.arange(v) * b)[:, None]
        self._valid = np.zeros(v, bool)
        self._g1 = np.zeros((v, b), f8)
        self._g2 = np.zeros((v, b), f8)
        self._g1b = np.zeros((v, b), f8)
        self._tiebreak = 1e-9 * np.arange(b)
        self._out = np.zeros((v, b), np.complex64)
        self._shifts = [1 << i for i in range(max(1, math.ceil(math.log2(b))))]
        if refine_iterations:
            self._init_refine()

    def reset(self, voice: int | None = None) -> None:
        """Forget the history of one voice (or all): its next frame starts afresh."""
        sl = slice(None) if voice is None else slice(voice, voice + 1)
        if voice is not None and not 0 <= voice < self.n_voices:
            raise InstrumentError(describe("phase: reset voice", voice,
                                           f"an index in [0, {self.n_voices - 1}] or None",
                                           "pass a voice index of this bank"))
        self._fresh[sl] = True
        self._pend_valid[sl] = False
        self._prev_sig[sl] = False
        if self.refine_iterations:
            self._acc[sl] = 0.0

    def process(self, mag: np.ndarray) -> np.ndarray:
        """One magnitude frame per voice (n_voices, n_bins) -> complex64 (n_voices, n_bins).

        The returned array is reused by the next call: copy it to keep it.
        """
        if _sanitize(mag, self._mag, (self.n_voices, self.n_bins), "PhaseReconstructor"):
            self.bad_frames += 1
        self._log_of(self._mag, self._log)
        if self.lookahead_frames == 0:
            np.copyto(self._cur_mag, self._mag)
            np.copyto(self._cur_log, self._log)
            np.copyto(self._next_log, self._log)
            valid = None
        else:
            np.copyto(self._cur_mag, self._pend_mag)
            np.copyto(self._cur_log, self._pend_log)
            np.copyto(self._next_log, self._log)
            np.copyto(self._pend_mag, self._mag)
            np.copyto(self._pend_log, self._log)
            valid = self._valid
            np.copyto(valid, self._pend_valid)
            self._pend_valid[:] = True
            # A voice without a pending frame outputs silence this call.
            np.multiply(self._cur_mag, valid[:, None], out=self._cur_mag)
        self._frame()
        if self.refine_iterations:
            self._refine()
        if valid is not None:
            # Keep voices that had no pending frame fresh (their state was not a real frame).
            self._fresh |= ~valid
        return self._out

    # -- internals ------------------------------------------------------------------------

    def _log_of(self, mag: np.ndarray, out: np.ndarray) -> None:
        """log|X| floored at tol * frame max (so slopes next to silence stay bounded)."""
        np.max(mag, axis=1, keepdims=True, out=self._fmax)
        np.multiply(self._fmax, self.tol, out=self._floor)
        self._floor += 1e-30
        np.maximum(mag, self._floor, out=out)
        np.log(out, out=out)

    def _frame(self) -> None:
        """Phase of the current frame (``_cur_*``) from the state; writes ``_out``."""
        mag, ls = self._cur_mag, self._cur_log
        fresh = self._fresh
        if fresh.any():
            # No previous frame: zero time derivative, previous phase random, no sources.
            f = fresh[:, None]
            np.copyto(self._prev_log, ls, where=f)
            np.copyto(self._prev_phase, self._random.next(), where=f)
            np.copyto(self._prev_sig, False, where=f)
        # Significance against the current frame's own maximum.
        np.max(mag, axis=1, keepdims=True, out=self._fmax)
        np.multiply(self._fmax, self.tol, out=self._floor)
        np.greater(mag, self._floor, out=self._sig)
        # Instantaneous frequency from the slope of log|X| across bins (0 at DC and Nyquist).
        dm = self._dm
        np.subtract(ls[:, 2:], ls[:, :-2], out=dm[:, 1:-1])
        dm[:, 1:-1] *= 0.5
        dm[:, 0] = 0.0
        dm[:, -1] = 0.0
        np.multiply(dm, self._w_scale, out=self._w)
        self._w += self._bin_w
        if fresh.any():
            np.copyto(self._prev_w, self._w, where=fresh[:, None])
        # Phase slope across bins from the change of log|X| over time.
        dn = self._dn
        if self.lookahead_frames == 0:
            np.subtract(ls, self._prev_log, out=dn)
        else:
            np.subtract(self._next_log, self._prev_log, out=dn)
            dn *= 0.5
            # A voice whose next frame is its first real one: use the backward difference.
        np.multiply(dn, self._dphi_scale, out=self._dphi)
        # Time-step candidate for every bin: trapezoid of the instantaneous frequency.
        np.add(self._prev_w, self._w, out=self._tphase)
        self._tphase *= 0.5 * self.hop_samples
        self._tphase += self._prev_phase
        # Frequency-step offsets: C[m] = sum_{k<m} (dphi[k] + dphi[k+1]) / 2.
        cum = self._cum
        np.add(self._dphi[:, 1:], self._dphi[:, :-1], out=cum[:, 1:])
        cum[:, 1:] *= 0.5
        cum[:, 0] = 0.0
        np.cumsum(cum, axis=1, out=cum)
        if self.integration == "scan":
            self._integrate_scan(ls)
        else:
            self._integrate_heap(ls)
        # Random phase below tolerance.
        np.copyto(self._phase, self._random.next(), where=~self._sig)
        _wrap(self._phase, self._tmp)
        # DC and Nyquist coefficients of a real signal are real: the nearer of 0 and pi
        # (the inverse FFT would drop their imaginary part, i.e. scale them by cos(phase)).
        ends = self._phase[:, ::self.n_bins - 1]
        ends[...] = np.where(np.abs(ends - math.pi) < 0.5 * math.pi, math.pi, 0.0)
        # State for the next frame.
        np.copyto(self._prev_log, ls)
        np.copyto(self._prev_w, self._w)
        np.copyto(self._prev_phase, self._phase)
        np.copyto(self._prev_sig, self._sig)
        fresh[:] = False
        # Output coefficients.
        _polar(mag, self._phase, self._out, self._f32)

    def _init_refine(self) -> None:
        """Buffers of the look-ahead refinement (see :meth:`_refine`)."""
        n, h, v, b = self.n_fft, self.hop_samples, self.n_voices, self.n_bins
        win = hann_periodic(n)
        synth_win = OverlapAdd(n, h).synthesis_window
        # Sum of analysis x synthesis window over the frames present when frame n is refined
        # (n-3 .. n+1 of n/h = 4 overlapping), on [0, n + h) where frame n spans [0, n):
        # dividing by it fills the part that frames n+2, n+3 would cover (LSEE average).
        present = np.zeros(n + h)
        for k in range(1 - n // h, 2):
            lo, hi = max(0, k * h), min(n + h, k * h + n)
            if lo < hi:
                present[lo:hi] += (win * synth_win)[lo - k * h:hi - k * h]
        inv = 1.0 / np.maximum(present, 1e-3)
        self._ana_win = np.stack([win * inv[:n], win * inv[h:h + n]])  # (2, n) frames n, n+1
        self._synth_win = synth_win
        self._centre = np.where(np.arange(b) % 2 == 0, 1.0, -1.0)
        self._acc = np.zeros((v, n + h))  # committed frames' synthesis; frame n at [0, n)
        self._spec2 = np.zeros((v, 2, b), np.complex128)  # frames n, n+1, index-0 phase
        self._proj = np.zeros((v, 2, b), np.complex128)
        self._mag2 = np.zeros((v, 2, b))
        self._abs2 = np.zeros((v, 2, b))
        self._time2 = np.zeros((v, 2, n))
        self._sig_time = np.zeros((v, n + h))
        self._time1 = np.zeros((v, n))

    def _refine(self) -> None:
        """A few Griffin-Lim passes on frames n (``_out``) and n+1 (the look-ahead), with
        the committed frames fixed (RTISI-LA, Zhu et al. 2007, started from RTPGHI as in
        Průša & Holighaus 2017); frame n is then committed and written to ``_out``.

        Spectra are kept with the phase referenced to index 0 (centre factor (-1)^m
        folded in), so synthesis is a plain irfft and analysis a plain rfft.
        """
        n, h = self.n_fft, self.hop_samples
        spec, proj, mag2, abs2 = self._spec2, self._proj, self._mag2, self._abs2
        t2, y = self._time2, self._sig_time
        np.copyto(mag2[:, 0], self._cur_mag)
        np.copyto(mag2[:, 1], self._mag)  # the look-ahead frame just received
        np.copyto(spec[:, 0], self._out)
        # Look-ahead frame's start: frame n's phase advanced by its instantaneous frequency.
        np.multiply(self._w, h, out=self._tmp)
        self._tmp += self._phase
        _polar(self._mag, self._tmp, self._out, self._f32)
        np.copyto(spec[:, 1], self._out)
        spec *= self._centre
        iters = self.refine_iterations
        for i in range(iters):
            last = i == iters - 1
            np.fft.irfft(spec, n=n, axis=-1, out=t2)
            t2 *= self._synth_win
            np.copyto(y, self._acc)
            y[:, :n] += t2[:, 0]
            y[:, h:] += t2[:, 1]
            np.multiply(y[:, :n], self._ana_win[0], out=t2[:, 0])
            if last:  # only frame n is needed
                np.fft.rfft(t2[:, 0], axis=-1, out=proj[:, 0])
                sl = slice(0, 1)
            else:
                np.multiply(y[:, h:], self._ana_win[1], out=t2[:, 1])
                np.fft.rfft(t2, axis=-1, out=proj)
                sl = slice(0, 2)
            # Keep the phase, impose the target magnitude (|Y| = 0 -> that bin goes silent).
            p, a = proj[:, sl], abs2[:, sl]
            np.abs(p, out=a)
            a += 1e-30
            np.divide(mag2[:, sl], a, out=a)
            np.multiply(p, a, out=spec[:, sl])
        # Commit frame n: its synthesis joins the fixed part, which moves on by one hop.
        f = self._time1
        np.fft.irfft(spec[:, 0], n=n, axis=-1, out=f)
        f *= self._synth_win
        self._acc[:, :n] += f
        self._acc[:, :-h] = self._acc[:, h:]
        self._acc[:, -h:] = 0.0
        spec0 = spec[:, 0]
        spec0 *= self._centre
        np.copyto(self._out, spec0, casting="same_kind")
        np.arctan2(spec0.imag, spec0.real, out=self._prev_phase)  # the state goes on from here

    def _integrate_scan(self, ls: np.ndarray) -> None:
        """Widest-path roots by a clamp-function prefix scan, both directions at once."""
        v = self.n_voices
        sig, src = self._sig, self._src
        # hi = node priority (log|X|, blocking below tolerance); g2 = the node's own source
        # priority (previous frame's log|X|; far below every real one when that bin was not
        # significant, so a new island starts at its largest bin); ties go to the lower bin,
        # like the heap's pop order; lo = min(g2, hi).
        g1, g2, g3 = self._g1, self._g2, self._g1b
        np.copyto(g1, ls)
        np.copyto(g1, -_BLOCK, where=~sig)
        np.logical_and(self._prev_sig, sig, out=src)
        np.subtract(ls, _ISLAND, out=g2)
        np.copyto(g2, self._prev_log, where=src)
        g2 -= self._tiebreak
        np.minimum(g2, g1, out=g3)
        lh, lh2 = self._lh, self._lh2  # [lo; hi] stacked: one ufunc call serves both
        lh[0, :v] = g3
        lh[0, v:] = g3[:, ::-1]
        lh[1, :v] = g1
        lh[1, v:] = g1[:, ::-1]
        for d in self._shifts:
            # f[k] <- f[k] o f[k-d]:  lo' = min(hi_k, max(lo_k, lo_{k-d})),
            #                         hi' = min(hi_k, max(lo_k, hi_{k-d})).
            np.maximum(lh[0:1, :, d:], lh[:, :, :-d], out=lh2[:, :, d:])
            np.minimum(lh2[:, :, d:], lh[1:2, :, d:], out=lh2[:, :, d:])
            lh2[:, :, :d] = lh[:, :, :d]
            lh, lh2 = lh2, lh
        lo = lh[0]
        hi, lo2 = lh2[0], lh2[1]  # free buffers from here on
        # lo[k]: widest-path level through bin k from a source at or before k (scan order).
        # A bin restarts (takes the time step) when its own source beats the level arriving
        # from the bin before it; otherwise it inherits that bin's root.
        arrive = hi  # reuse: level arriving at k from k-1 (no path at k = 0)
        arrive[:, 0] = -np.inf
        arrive[:, 1:] = lo[:, :-1]
        own = lo2  # reuse: the unclamped source priority, in scan order
        own[:v] = g2
        own[v:] = g2[:, ::-1]
        restart = self._restart
        np.greater_equal(own, arrive, out=restart)
        root = self._root
        np.multiply(restart, self._idx, out=root)
        np.maximum.accumulate(root, axis=1, out=root)
        # Each bin: the best of its own source, the left arrival and the right arrival.
        # Right-direction results are in reversed bin order.
        arr_l, arr_r = arrive[:v], arrive[v:, ::-1]
        root_l, root_r = root[:v], root[v:, ::-1]
        np.subtract(self.n_bins - 1, root_r, out=root_r)
        rootv = self._rootv
        np.greater_equal(arr_l, arr_r, out=self._take_l)
        np.copyto(rootv, root_r)
        np.copyto(rootv, root_l, where=self._take_l)
        # Own source best on both sides: the bin is its own root (root_l == k there too).
        np.greater_equal(own[:v], np.maximum(arr_l, arr_r, out=self._g1), out=self._take_l)
        np.copyto(rootv, self._idx[:v], where=self._take_l)
        self._apply_roots(rootv)

    def _apply_roots(self, rootv: np.ndarray) -> None:
        """phase[m] = time-step phase at the root + frequency steps from the root to m."""
        flat = self._flat
        np.add(rootv, self._row_offset, out=flat)
        np.take(self._tphase, flat, out=self._phase)
        self._phase += self._cum
        np.take(self._cum, flat, out=self._g1)
        self._phase -= self._g1

    def _integrate_heap(self, ls: np.ndarray) -> None:
        """Reference: the max-heap integration, one voice at a time, in plain Python."""
        n_bins = self.n_bins
        for v in range(self.n_voices):
            sig = self._sig[v]
            prev_sig = self._prev_sig[v]
            todo = set(np.flatnonzero(sig).tolist())
            root = np.zeros(n_bins, np.intp)
            heap = [(-float(self._prev_log[v, m]), 0, m) for m in np.flatnonzero(prev_sig)]
            heapq.heapify(heap)
            lsv = ls[v]
            while todo:
                while heap and todo:
                    _, frame, m = heapq.heappop(heap)
                    if frame == 0:  # previous frame's bin: time step into (m, n)
                        if m in todo:
                            todo.discard(m)
                            root[m] = m
                            heapq.heappush(heap, (-float(lsv[m]), 1, m))
                    else:  # current frame's bin: frequency steps to its neighbours
                        for k in (m - 1, m + 1):
                            if k in todo:
                                todo.discard(k)
                                root[k] = root[m]
                                heapq.heappush(heap, (-float(lsv[k]), 1, k))
                if todo:  # a new island: its largest bin takes the time step
                    m = max(todo, key=lambda k: lsv[k])
                    todo.discard(m)
                    root[m] = m
                    heapq.heappush(heap, (-float(lsv[m]), 1, m))
            self._rootv[v] = root
        self._apply_roots(self._rootv)


class BaselinePhase:
    """Baselines for the benchmark and tests: ``"zero"``, ``"random"`` or ``"vocoder"``.

    ``vocoder`` advances each bin's phase by its centre frequency times the hop (plain
    phase vocoder, no phase locking).
    """

    def __init__(self, n_fft: int = 1024, hop_samples: int = 256, n_voices: int = 1,
                 kind: str = "vocoder", seed: int = 0) -> None:
        _check_sizes(n_fft, hop_samples)
        if kind not in ("zero", "random", "vocoder"):
            raise ConfigError(describe("phase: baseline kind", kind,
                                       "'zero', 'random' or 'vocoder'", "pick one of those"))
        self.n_voices, self.n_bins, self.kind = n_voices, n_fft // 2 + 1, kind
        self.latency_frames = 0
        self._rng = np.random.default_rng(seed)
        self._advance = _TWO_PI * hop_samples * np.arange(self.n_bins) / n_fft
        self._phase = np.zeros((n_voices, self.n_bins))
        self._mag = np.zeros((n_voices, self.n_bins))
        self._tmp = np.zeros((n_voices, self.n_bins))
        self._f32 = np.zeros((n_voices, self.n_bins), np.float32)
        self._out = np.zeros((n_voices, self.n_bins), np.complex64)

    def reset(self, voice: int | None = None) -> None:
        self._phase[slice(None) if voice is None else slice(voice, voice + 1)] = 0.0

    def process(self, mag: np.ndarray) -> np.ndarray:
        _sanitize(mag, self._mag, (self.n_voices, self.n_bins), "BaselinePhase")
        if self.kind == "random":
            self._rng.random(out=self._phase)
            self._phase *= _TWO_PI
        elif self.kind == "vocoder":
            self._phase += self._advance
            _wrap(self._phase, self._tmp)
        _polar(self._mag, self._phase, self._out, self._f32)
        return self._out


class OverlapAdd:
    """Complex frames (this module's STFT convention) -> ``hop_samples`` samples per call.

    Synthesis window = the canonical dual of the periodic Hann, so analysis with
    :func:`stft` followed by this reconstructs the signal exactly (up to float error).
    Output of call ``n`` covers signal samples ``[n*hop - n_fft/2, n*hop - n_fft/2 + hop)``:
    ``latency_samples == n_fft // 2``.
    """

    def __init__(self, n_fft: int = 1024, hop_samples: int = 256) -> None:
        _check_sizes(n_fft, hop_samples)
        self.n_fft, self.hop_samples, self.n_bins = n_fft, hop_samples, n_fft // 2 + 1
        self.latency_samples = n_fft // 2
        w = hann_periodic(n_fft)
        energy = np.zeros(n_fft)
        for shift in range(-(n_fft // hop_samples) - 1, n_fft // hop_samples + 2):
            lo, hi = max(0, shift * hop_samples), min(n_fft, n_fft + shift * hop_samples)
            if lo < hi:
                energy[lo:hi] += w[lo - shift * hop_samples:hi - shift * hop_samples] ** 2
        self.synthesis_window = w / np.maximum(energy, 1e-12)
        # (-1)^m moves the time origin from the frame centre to index 0 of the irfft output.
        self._centre = np.where(np.arange(self.n_bins) % 2 == 0, 1.0, -1.0)
        self._spec = np.zeros(self.n_bins, np.complex128)
        self._frame = np.zeros(n_fft)
        self._acc = np.zeros(n_fft)
        self._out = np.zeros(hop_samples, np.float32)

    def reset(self) -> None:
        self._acc[:] = 0.0

    def process(self, spec: np.ndarray) -> np.ndarray:
        """One complex frame (n_bins,) -> (hop_samples,) float32 (reused by the next call)."""
        np.multiply(spec, self._centre, out=self._spec)
        np.fft.irfft(self._spec, n=self.n_fft, out=self._frame)
        self._frame *= self.synthesis_window
        self._acc += self._frame
        a = self.hop_samples
        np.copyto(self._out, self._acc[:a], casting="same_kind")
        self._acc[:-a] = self._acc[a:]
        self._acc[-a:] = 0.0
        return self._out


class UnpitchedSynth:
    """RTPGHI + overlap-add for a bank of voices, summed to one mono stream.

    ``process(mag, gains)``: ``mag`` (n_voices, n_bins) linear magnitudes in the
    :func:`stft` convention (the decoder's unit-power frames), ``gains`` (n_voices,) linear
    factors on them; returns (hop_samples,) float32, reused by the next call.
    ``latency_samples``: output sample ``i`` holds signal time ``i - latency_samples``, where
    frame ``t`` is centred on ``t * hop_samples``: ``n_fft // 2 + lookahead_frames * hop``
    (768 samples by default; ``lookahead_frames=0`` saves one hop at some cost on transients).
    ``refine_iterations``: see :class:`PhaseReconstructor` (None: its default).
    """

    def __init__(self, n_fft: int = 1024, hop_samples: int = 256, n_voices: int = 1, *,
                 lookahead_frames: int = 1, refine_iterations: int | None = None,
                 seed: int = 0) -> None:
        self.phase = PhaseReconstructor(n_fft, hop_samples, n_voices,
                                        lookahead_frames=lookahead_frames,
                                        refine_iterations=refine_iterations, seed=seed)
        self.ola = OverlapAdd(n_fft, hop_samples)
        self.n_voices, self.n_bins, self.hop_samples = n_voices, n_fft // 2 + 1, hop_samples
        self.latency_samples = self.ola.latency_samples + lookahead_frames * hop_samples
        self.bad_gains = 0  # calls whose gains held NaN/inf (those voices were muted)
        self._gains = np.zeros(n_voices, np.float64)
        self._gains_c = np.zeros(n_voices, np.complex64)
        self._spec = np.zeros(self.n_bins, np.complex64)

    @property
    def bad_frames(self) -> int:
        return self.phase.bad_frames

    def reset(self, voice: int | None = None) -> None:
        """Forget one voice's phase history (or all voices' and the overlap-add tail)."""
        self.phase.reset(voice)
        if voice is None:
            self.ola.reset()

    def process(self, mag: np.ndarray, gains: np.ndarray) -> np.ndarray:
        g = self._gains
        if np.shape(gains) != (self.n_voices,):
            raise InstrumentError(describe("UnpitchedSynth: gains shape", np.shape(gains),
                                           f"({self.n_voices},)", "pass one gain per voice"))
        np.copyto(g, gains, casting="unsafe")
        if not np.isfinite(g).all():
            self.bad_gains += 1
            np.nan_to_num(g, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        coeffs = self.phase.process(mag)
        np.copyto(self._gains_c, g, casting="unsafe")
        np.matmul(self._gains_c, coeffs, out=self._spec)
        return self.ola.process(self._spec)
