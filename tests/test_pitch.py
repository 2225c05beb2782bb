"""YIN pitch tracker: accuracy on harmonic tones, unvoiced on noise/silence, block-size
independence, stated delay."""

from __future__ import annotations

import numpy as np
import pytest

from instrument.corpus.pitch import PitchTracker
from instrument.errors import ConfigError

SR = 48000
HOP = 256


def harmonic_tone(f0: float, seconds: float = 0.4, seed: int = 0) -> np.ndarray:
    """A real-ish tone: decaying harmonics with random phases, slight noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    x = sum((0.5 / k) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 30) if k * f0 < SR / 2)
    return (x + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("f0", [41.2, 98.0, 261.63, 440.0, 1046.5, 1800.0])
def test_tracks_harmonic_tones_within_10_cents(f0: float) -> None:
    tr = PitchTracker(SR, HOP)
    x = harmonic_tone(f0)
    out = tr.process(x)
    inner = out[8:-8]                        # frames whose window lies inside the tone
    assert all(v for _, v in inner)
    err = [1200 * np.log2(f / f0) for f, _ in inner]
    assert max(abs(e) for e in err) < 10.0


def test_unvoiced_on_noise_and_silence() -> None:
    rng = np.random.default_rng(1)
    for x in (0.3 * rng.standard_normal(SR // 2), np.zeros(SR // 2)):
        out = PitchTracker(SR, HOP).process(x.astype(np.float32))
        assert len(out) > 50
        assert sum(v for _, v in out) <= 0.02 * len(out)
        assert all(f == 0.0 for f, v in out if not v)


@pytest.mark.parametrize("block", [1, 64, 441, 4096])
def test_block_size_independent(block: int) -> None:
    x = harmonic_tone(220.0, 0.3)
    ref = PitchTracker(SR, HOP).process(x)
    tr = PitchTracker(SR, HOP)
    out: list[tuple[float, bool]] = []
    for i in range(0, len(x), block):
        out += tr.process(x[i:i + block])
    assert len(out) == len(ref)
    np.testing.assert_allclose([f for f, _ in out], [f for f, _ in ref], rtol=1e-6)
    assert [v for _, v in out] == [v for _, v in ref]


def test_delay_and_frame_count() -> None:
    tr = PitchTracker(SR, HOP)
    d = tr.delay_samples
    assert 0 < d < 0.05 * SR
    assert tr.process(np.zeros(d - 1, np.float32)) == []
    assert len(tr.process(np.zeros(1, np.float32))) == 1           # frame 0 now complete
    assert len(tr.process(np.zeros(10 * HOP, np.float32))) == 10   # then one per hop


def test_onset_appears_at_the_right_frame() -> None:
    """A tone starting at sample 20 * HOP is voiced from about frame 20, not earlier."""
    x = np.concatenate([np.zeros(20 * HOP, np.float32), harmonic_tone(330.0, 0.3)])
    out = PitchTracker(SR, HOP).process(x)
    first = next(i for i, (_, v) in enumerate(out) if v)
    assert 14 <= first <= 21


def test_known_f0_refines_detuned_note() -> None:
    nominal = 440.0
    actual = nominal * 2 ** (30 / 1200)                 # 30 cents sharp
    out = PitchTracker(SR, HOP, known_f0_hz=nominal).process(harmonic_tone(actual))
    f = np.array([f for f, v in out[8:-8] if v])
    assert len(f) > 40 and np.max(np.abs(1200 * np.log2(f / actual))) < 3.0


def test_bad_range_refused() -> None:
    with pytest.raises(ConfigError, match="fmin"):
        PitchTracker(SR, HOP, fmin_hz=500.0, fmax_hz=100.0)
