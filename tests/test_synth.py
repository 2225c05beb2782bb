"""Synthesis building blocks: harmonic amplitudes, band-limiting, noise level, limiter."""

from __future__ import annotations

import numpy as np
from conftest import mel_band_edges_hz

from instrument.engine.synth import HarmonicSynth, Limiter, NoiseSynth, band_bin_weights

SR = 48000
HOP = 256


def _harmonic_run(amps: np.ndarray, f0: float, hops: int = 200, sr: int = SR,
                  max_hz: float = 24000.0) -> np.ndarray:
    hs = HarmonicSynth(sr, HOP, 2, len(amps), max_hz)
    hs.start(0, f0)
    slots = np.array([0])
    return np.concatenate([hs.process(slots, amps[None, :], np.array([f0]))
                           for _ in range(hops)])


def test_harmonic_amplitudes_are_sine_amplitudes():
    amps = np.zeros(64, np.float32)
    amps[0], amps[2] = 0.5, 0.25
    y = _harmonic_run(amps, 375.0)[HOP * 4:]  # 375 Hz: whole cycles in a 2^n FFT at 48 kHz
    n = 1 << 14
    mag = np.abs(np.fft.rfft(y[:n])) * 2 / n
    assert abs(mag[round(375 * n / SR)] - 0.5) < 0.005
    assert abs(mag[round(3 * 375 * n / SR)] - 0.25) < 0.005
    assert mag[round(2 * 375 * n / SR)] < 0.002


def test_harmonics_above_the_limit_are_zeroed():
    amps = np.full(64, 0.1, np.float32)
    y = _harmonic_run(amps, 1000.0, max_hz=10000.0)[HOP * 4:]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    f = np.fft.rfftfreq(len(y), 1 / SR)
    assert spec[f > 10500].max() < 1e-3 * spec.max()
    assert spec[(f > 8900) & (f < 9100)].max() > 0.1 * spec.max()  # 9th harmonic is there


def test_noise_band_rms_is_what_was_asked():
    edges = mel_band_edges_hz(SR)
    ns = NoiseSynth(SR, HOP, edges, SR / 2, seed=1)
    rms = np.zeros((1, 32), np.float32)
    rms[0, 20] = 0.3  # one band
    y = np.concatenate([ns.process(rms, np.array([1.0], np.float32)) for _ in range(800)])
    y = y[2 * HOP:]
    assert abs(np.sqrt(np.mean(y.astype(np.float64) ** 2)) - 0.3) < 0.015
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    inside = (f >= edges[20]) & (f < edges[21])
    assert spec[inside].sum() > 0.95 * spec.sum()


def test_noise_has_no_hop_rate_level_ripple():
    edges = mel_band_edges_hz(SR)
    ns = NoiseSynth(SR, HOP, edges, SR / 2, seed=2)
    rms = np.full((1, 32), 0.1, np.float32)
    y = np.concatenate([ns.process(rms, np.array([1.0], np.float32)) for _ in range(2000)])
    power_by_phase = (y[HOP:].reshape(-1, HOP).astype(np.float64) ** 2).mean(axis=0)
    # a plain Hann OLA of noise dips to half power mid-hop; sqrt-Hann keeps it flat
    chunks = power_by_phase.reshape(8, -1).mean(axis=1)
    assert chunks.max() / chunks.min() < 1.15


def test_narrow_bands_keep_their_power():
    w = band_bin_weights(mel_band_edges_hz(SR), 2 * HOP, SR, SR / 2)
    assert (w.sum(axis=1) > 0).all()  # every band reaches at least one bin
    w44 = band_bin_weights(mel_band_edges_hz(96000), 2 * HOP, 44100, 22050)
    assert (w44.sum(axis=1) == 0).sum() > 0  # bands above the output Nyquist are dropped


def test_limiter_never_exceeds_the_ceiling_and_recovers():
    lim = Limiter(SR, HOP, ceiling=0.98, release_ms=20)
    rng = np.random.default_rng(0)
    loud = [lim.process((rng.standard_normal(HOP) * 5).astype(np.float32)) for _ in range(40)]
    assert max(np.abs(b).max() for b in loud) <= 0.98 + 1e-6
    quiet = [lim.process(np.full(HOP, 0.5, np.float32)) for _ in range(200)]
    assert quiet[0][0] < 0.5  # still reduced just after the loud part
    assert abs(quiet[-1][-1] - 0.5) < 1e-4  # recovered
    assert np.all(np.diff(np.concatenate(quiet)) >= -1e-7)  # release is smooth and monotonic


def test_limiter_given_the_peak_matches_its_own_peak():
    rng = np.random.default_rng(3)
    a, b = Limiter(SR, HOP), Limiter(SR, HOP)
    for gain in (0.5, 3.0, 0.2, 0.01):
        x = (gain * rng.standard_normal(HOP)).astype(np.float32)
        np.testing.assert_array_equal(a.process(x.copy(), float(np.abs(x).max())),
                                      b.process(x.copy()))
    assert a.active_hops == b.active_hops > 0
