"""Feature analysis: harmonic amplitudes and noise levels recovered, unit power, shapes,
streaming = offline, known-note refinement, periodicity and mode choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instrument.corpus.features import (
    AMP_FLOOR,
    HOP_SAMPLES,
    N_FFT,
    N_HARMONICS,
    N_NOISE_BANDS,
    PITCHED_THRESHOLD,
    WINDOW_SAMPLES,
    Frames,
    StreamAnalyzer,
    analyze,
    choose_mode,
    noise_band_edges_hz,
    periodicity,
)
from instrument.corpus.read import Clip
from instrument.errors import ConfigError, CorpusError

SR = 48000


def tone(f0: float, amps: np.ndarray, seconds: float, noise_rms: float = 0.0,
         seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    x = sum(a * np.sin(2 * np.pi * (k + 1) * f0 * t + rng.uniform(0, 2 * np.pi))
            for k, a in enumerate(amps) if (k + 1) * f0 < SR / 2)
    return (x + noise_rms * rng.standard_normal(len(t))).astype(np.float32)


def linear(fr: Frames) -> np.ndarray:
    """Un-normalised linear values of each frame (features and loudness together)."""
    return np.exp(fr.features.astype(np.float64)) * 10 ** (fr.loudness_db[:, None] / 20.0)


def test_constants_and_band_edges() -> None:
    assert (N_HARMONICS, N_NOISE_BANDS, HOP_SAMPLES, N_FFT, WINDOW_SAMPLES) == (
        64, 32, 256, 1024, 2048)
    e = noise_band_edges_hz(SR)
    assert e.shape == (33,) and e[0] == 0.0 and e[-1] == SR / 2 and np.all(np.diff(e) > 0)
    assert np.diff(e)[0] < np.diff(e)[-1]                      # mel: narrow at the bottom


def test_recovers_harmonic_amplitudes_and_noise_level() -> None:
    amps = 0.5 * 0.8 ** np.arange(20)
    sigma = 0.003
    fr = analyze(tone(220.0, amps, 1.0, sigma, seed=1), SR, "pitched", f0_hz=220.0)
    lin = linear(fr)[20:-20]
    harm_db = 20 * np.log10(lin[:, :20].mean(axis=0) / amps)
    assert np.max(np.abs(harm_db)) < 0.5
    assert np.all(lin[:, 20:N_HARMONICS] < 0.01 * amps[-1] * 10)   # absent harmonics small
    widths = np.diff(noise_band_edges_hz(SR))
    expect = sigma ** 2 * widths / (SR / 2)                          # white noise per band
    got = (lin[:, N_HARMONICS:] ** 2).mean(axis=0)
    err_db = 10 * np.log10(got / expect)
    assert np.max(np.abs(err_db[1:])) < 2.0, err_db
    assert abs(err_db[0]) < 3.0, err_db                    # the narrowest band: fewest bins
    assert np.median(np.abs(err_db)) < 0.7


@pytest.mark.parametrize("mode", ["pitched", "unpitched"])
def test_shapes_and_unit_power(mode: str) -> None:
    x = tone(300.0, np.array([0.3, 0.1, 0.05]), 0.3, 0.01)
    x[:3000] = 0.0                                              # includes silent frames
    fr = analyze(x, SR, mode, label="t")
    n = int(np.ceil(len(x) / HOP_SAMPLES))
    f = 96 if mode == "pitched" else 513
    assert fr.features.shape == (n, f) and fr.features.dtype == np.float32
    assert fr.f0_hz.shape == fr.voiced.shape == fr.loudness_db.shape == (n,)
    assert fr.label == "t" and fr.mode == mode and fr.hop_samples == HOP_SAMPLES
    assert np.all(np.isfinite(fr.features)) and np.all(fr.features >= np.log(AMP_FLOOR) - 1e-6)
    v = np.exp(fr.features.astype(np.float64))
    if mode == "pitched":
        power = 0.5 * np.sum(v[:, :N_HARMONICS] ** 2, 1) + np.sum(v[:, N_HARMONICS:] ** 2, 1)
    else:
        power = np.sum(v ** 2, axis=1)
    np.testing.assert_allclose(power, 1.0, atol=3e-3)


def test_loudness_of_a_unit_sine_is_minus_3_db() -> None:
    for mode in ("pitched", "unpitched"):
        fr = analyze(tone(440.0, np.array([1.0]), 0.5), SR, mode)
        assert np.all(np.abs(fr.loudness_db[15:-15] + 3.01) < 0.2), mode


def test_harmonics_above_nyquist_are_floored() -> None:
    fr = analyze(tone(3000.0, np.full(10, 0.1), 0.3), SR, "pitched", f0_hz=3000.0)
    above = np.arange(1, N_HARMONICS + 1) * 3000.0 >= SR / 2
    assert np.all(fr.features[10:-10][:, :N_HARMONICS][:, above] == np.float32(np.log(AMP_FLOOR)))


def test_unvoiced_frames_are_all_noise() -> None:
    rng = np.random.default_rng(3)
    fr = analyze((0.1 * rng.standard_normal(SR // 4)).astype(np.float32), SR, "pitched")
    assert not fr.voiced.any() and np.all(fr.f0_hz == 0.0)
    assert np.all(fr.features[:, :N_HARMONICS] == np.float32(np.log(AMP_FLOOR)))


def test_detuned_known_note_still_analysed_right() -> None:
    nominal = 261.63
    actual = nominal * 2 ** (-35 / 1200)                      # 35 cents flat
    amps = np.array([0.4, 0.2, 0.1, 0.05, 0.025])
    fr = analyze(tone(actual, amps, 0.6, 0.001), SR, "pitched", f0_hz=nominal)
    inner = slice(15, -15)
    assert fr.voiced[inner].all()
    assert np.max(np.abs(1200 * np.log2(fr.f0_hz[inner] / actual))) < 3.0
    lin = linear(fr)[inner]
    assert np.max(np.abs(20 * np.log10(lin[:, :5].mean(0) / amps))) < 0.5


@pytest.mark.parametrize("mode", ["pitched", "unpitched"])
def test_stream_equals_offline_whatever_the_blocks(mode: str) -> None:
    x = tone(200.0, np.array([0.3, 0.2, 0.1]), 0.2, 0.01)
    ref = analyze(x, SR, mode)
    sa = StreamAnalyzer(SR, mode, HOP_SAMPLES)
    blocks = [1, 7, 64, 441, 4096, 1000]
    parts, i, j = [], 0, 0
    while i < len(x):
        b = blocks[j % len(blocks)]
        parts.append(sa.process(x[i:i + b]))
        i, j = i + b, j + 1
    got = np.concatenate([p.features for p in parts])
    n = len(got)
    assert n == (len(x) - sa.latency_samples) // HOP_SAMPLES + 1
    np.testing.assert_allclose(got, ref.features[:n], atol=1e-4)
    np.testing.assert_allclose(np.concatenate([p.loudness_db for p in parts]),
                               ref.loudness_db[:n], atol=1e-4)
    np.testing.assert_allclose(np.concatenate([p.f0_hz for p in parts]), ref.f0_hz[:n],
                               rtol=1e-5)


def test_stream_latency_and_nonfinite_input() -> None:
    sa = StreamAnalyzer(SR, "pitched")
    assert WINDOW_SAMPLES // 2 <= sa.latency_samples < 0.05 * SR
    assert len(sa.process(np.zeros(sa.latency_samples - 1, np.float32))) == 0
    fr = sa.process(np.array([np.nan] + [0.0] * HOP_SAMPLES, np.float32))
    assert len(fr) == 2 and np.all(np.isfinite(fr.features)) and sa.nonfinite_samples == 1
    assert StreamAnalyzer(SR, "unpitched").latency_samples == N_FFT // 2


def test_periodicity_and_mode_choice() -> None:
    rng = np.random.default_rng(5)
    t = tone(330.0, np.array([0.3, 0.15, 0.07]), 0.5, 0.002)
    n = (0.2 * rng.standard_normal(SR // 2)).astype(np.float32)
    assert periodicity(t, SR) > 0.9
    assert periodicity(n, SR) < 0.1
    assert periodicity(np.zeros(SR // 4, np.float32), SR) == 0.0
    mode, p = choose_mode([Clip(Path("a.wav"), t, "a", None, SR)] * 2)
    assert mode == "pitched" and p >= PITCHED_THRESHOLD
    mode, p = choose_mode([Clip(Path("n.wav"), n, "n", None, SR)], sample_rate=SR)
    assert mode == "unpitched" and p < PITCHED_THRESHOLD


def test_bad_input_refused() -> None:
    with pytest.raises(CorpusError, match="NaN"):
        analyze(np.array([0.0, np.nan] * 1000, np.float32), SR, "pitched")
    with pytest.raises(ConfigError, match="mode"):
        analyze(np.zeros(1000, np.float32), SR, "wobbly")
    with pytest.raises(ConfigError, match="f0_hz"):
        analyze(np.zeros(1000, np.float32), SR, "pitched", f0_hz=-5.0)
    assert len(analyze(np.zeros(0, np.float32), SR, "pitched")) == 0
