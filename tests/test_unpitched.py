"""Unpitched mode of the Engine: magnitude frames at the model's rate, phase, resampling.

Fast tests use the random-weight unpitched model from conftest, and ``ToneDecoder``: that
real Decoder wrapped so its frame is the ``|STFT|`` of a steady sinusoid (a known spectrum
makes clicks and frequency shifts measurable). The last tests train a small unpitched model
for a few seconds on a drum pattern rendered at test time with fluidsynth (FluidR3 GM, MIT
licence); they skip with the reason when fluidsynth or the soundfont is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from instrument.control.commands import parse
from instrument.engine.engine import Engine
from instrument.engine.phase import stft
from instrument.engine.render import render
from instrument.engine.score import parse_text
from instrument.errors import ConfigError
from instrument.model.modelfile import Decoder

SR = 48000
BUSY = [(0.0, "note 60 0.9"), (0.01, "latent 0.1 0.9"), (0.02, "note 64 0.5"),
        (0.05, "param gain_db 3"), (0.09, "off 60"), (0.1, "gate 1"), (0.15, "alloff"),
        (0.16, "note 70 1")]


class ToneDecoder:
    """A real unpitched Decoder whose frames are those of a steady sinusoid at ``hz``
    (the model's own analysis convention); everything else is the wrapped decoder's."""

    def __init__(self, inner: Decoder, hz: float, name: str = "tone"):
        self.inner, self.hz, self.name = inner, hz, name
        t = np.arange(8192) / inner.sample_rate
        mag = np.abs(stft(np.sin(2 * np.pi * hz * t), inner.n_fft, inner.hop_samples))[12]
        mag /= np.sqrt(np.sum(mag ** 2))
        self._log = np.log(np.maximum(mag, 1e-4)).astype(np.float32)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode_log(self, knob_xy, f0_hz=None):
        return np.tile(self._log, (len(knob_xy), 1))


def _engine(decoder, score, sr: int = SR, **kw) -> Engine:
    eng = Engine(decoder, sr, **kw)
    for t, text in score:
        eng.schedule(parse(text), int(round(t * sr)))
    return eng


def _run(eng: Engine, total: int, size: int) -> np.ndarray:
    sizes = [size] * (total // size) + ([total % size] if total % size else [])
    return np.concatenate([eng.process(n) for n in sizes])


def _high_band(y: np.ndarray, sr: int, above_hz: float = 8000.0) -> np.ndarray:
    spec = np.fft.rfft(y.astype(np.float64))
    spec[np.fft.rfftfreq(len(y), 1.0 / sr) < above_hz] = 0.0
    return np.abs(np.fft.irfft(spec, len(y)))[sr // 20:-sr // 20]


def _peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spec) * sr / len(y))


@pytest.fixture(scope="module")
def unpitched(random_model_dir) -> Decoder:
    return Decoder(random_model_dir("unpitched"))


@pytest.mark.parametrize("sr, size", [(48000, 1), (48000, 441), (44100, 64), (44100, 4096),
                                      (96000, 333)])
def test_output_is_identical_whatever_the_block_size(unpitched: Decoder, sr: int, size: int):
    total = int(0.3 * sr)
    ref = _run(_engine(unpitched, BUSY, sr), total, total)
    got = _run(_engine(unpitched, BUSY, sr), total, size)
    assert np.abs(ref).max() > 0.01
    np.testing.assert_array_equal(got, ref)


def test_loud_voices_and_nan_frames_stay_finite_and_within_one(unpitched: Decoder):
    class NaNDecoder(ToneDecoder):  # real frames, every third one poisoned
        calls = 0

        def decode_log(self, knob_xy, f0_hz=None):
            out = self.inner.decode_log(knob_xy).copy()
            NaNDecoder.calls += 1
            if NaNDecoder.calls % 3 == 0:
                out[:, ::2] = np.nan
                out[:, 1::5] = np.inf
            return out

    score = [(0.0, "param gain_db 12"), (0.0, "param attack_ms 0.5"),
             (0.0, "param glide_ms 2000"), (0.0, "latent 1 0")]
    score += [(0.0, f"note {36 + 5 * k} 1") for k in range(16)]
    for dec in (unpitched, NaNDecoder(unpitched, 1000.0)):
        eng = _engine(dec, score, 44100)
        y = eng.process(44100)
        assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
        assert np.abs(y).max() > 0.5 and eng.status()["limiter_hops"] > 0
    assert eng.status()["sanitized_frames"] > 0
    assert eng.status()["mode"] == "unpitched"


def test_four_corners_give_different_spectra(unpitched: Decoder):
    specs = []
    for x, y in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        eng = _engine(unpitched, [(0.0, "param glide_ms 0"), (0.0, f"latent {x} {y}"),
                                  (0.0, "param sustain 1"), (0.0, "note 60 1")])
        sig = eng.process(int(0.5 * SR))[int(0.1 * SR):].astype(np.float64)
        assert np.abs(sig).max() > 0.01
        frames = np.abs(stft(sig, 1024, 256))[4:-4].mean(axis=0)
        specs.append(np.log(frames + 1e-6))
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.mean(np.abs(specs[i] - specs[j])) > 0.1


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
def test_a_tone_frame_plays_at_its_frequency_at_any_output_rate(unpitched: Decoder, sr: int):
    tone = ToneDecoder(unpitched, 3000.0)
    eng = _engine(tone, [(0.0, "param sustain 1"), (0.0, "param gain_db 0"),
                         (0.0, "note 60 1")], sr)
    y = eng.process(sr)[sr // 4:]
    assert abs(_peak_hz(y, sr) - 3000.0) < 5.0  # not played at the model's rate
    rms_db = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    assert -20.0 < rms_db < -16.0  # the unpitched reference level, -18 dBFS
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0


@pytest.mark.parametrize("sr", [44100, 48000])
def test_latency_samples_places_the_first_frame(unpitched: Decoder, sr: int):
    tone = ToneDecoder(unpitched, 1000.0)
    eng = _engine(tone, [(0.0, "param attack_ms 0.5"), (0.0, "param sustain 1"),
                         (0.0, "note 60 1")], sr)
    y = eng.process(sr // 2).astype(np.float64)
    period = int(round(sr / 1000.0))
    env = np.sqrt(np.convolve(y ** 2, np.ones(period) / period, mode="same"))
    steady = np.median(env[sr // 4:])
    # The first frame's centre is where the overlap-add of frames reaches 3/4 of steady; a
    # note scheduled on a hop boundary skips the wait for one (latency_samples' first hop).
    t75 = int(np.flatnonzero(env >= 0.75 * steady)[0])
    centre = eng.latency_samples - eng.hop_samples
    assert abs(t75 - centre) < 96, (t75, centre)
    assert env[:centre - 600].max() < 0.05 * steady  # nothing comes early


def test_steal_and_release_do_not_click(unpitched: Decoder):
    tone = ToneDecoder(unpitched, 375.0)
    score = [(0.0, "param voices 1"), (0.0, "param sustain 1"), (0.0, "note 36 1"),
             (0.3, "note 40 1"), (0.5, "note 40 1"), (0.6, "param release_ms 30"),
             (0.7, "off 40")]
    for sr in (48000, 44100):
        eng = _engine(tone, score, sr)
        y = eng.process(sr)
        assert eng.status()["stolen"] == 1
        assert np.abs(y).max() > 0.05
        # the same tone cut hard where the steal happens: what a click looks like
        cut = _engine(tone, score[:3], sr).process(sr)
        cut[int(0.3 * sr) + 100:] = 0.0
        assert _high_band(cut, sr).max() > 0.003
        assert _high_band(y, sr).max() < 0.1 * _high_band(cut, sr).max()


def test_idle_engine_is_silent_and_plays_again(unpitched: Decoder):
    eng = _engine(unpitched, [(0.0, "param release_ms 20"), (0.0, "note 60 1"),
                              (0.05, "off 60")], 44100)
    eng.process(44100 // 2)
    assert eng.status()["voices"] == 0
    assert not eng.process(4410).any()  # banks skipped, resampler tail drained: exact zeros
    eng.send(parse("note 62 1"))
    assert np.abs(eng.process(4410)).max() > 0.01


def test_swap_decoder_crossfades_and_refuses_other_kinds(unpitched: Decoder, random_model_dir,
                                                         pitched_decoder: Decoder):
    a_tone, b_tone = ToneDecoder(unpitched, 375.0, "a"), ToneDecoder(unpitched, 500.0, "b")
    eng = _engine(a_tone, [(0.0, "param sustain 1"), (0.0, "note 60 1")])
    a = eng.process(int(0.3 * SR))
    eng.swap_decoder(b_tone)
    b = eng.process(int(0.3 * SR))
    y = np.concatenate([a, b])
    assert eng.status()["model"] == "b"
    assert abs(_peak_hz(b[SR // 10:], SR) - 500.0) < 5.0
    hard = np.concatenate([a, np.zeros_like(b)])
    assert _high_band(y, SR).max() < 0.1 * _high_band(hard, SR).max()
    # a real second model swaps in too
    eng.swap_decoder(Decoder(random_model_dir("unpitched", seed=7)))
    assert np.isfinite(eng.process(SR // 10)).all()
    with pytest.raises(ConfigError, match="swap_decoder"):
        eng.swap_decoder(pitched_decoder)
    with pytest.raises(ConfigError, match="swap_decoder"):
        eng.swap_decoder(Decoder(random_model_dir("unpitched", sample_rate=44100)))
    assert np.isfinite(eng.process(256)).all()  # still playing after the refusals


# ------------------------------------------------------------- a model trained on drums
@pytest.fixture(scope="module")
def drum_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_phase import render_sounds

    pytest.importorskip("instrument.corpus.features", reason="corpus stage not present")
    from instrument.model.cut import cut
    from instrument.model.train import TrainConfig, train

    try:
        drums = render_sounds(2.0)["drums"]
    except RuntimeError as e:
        pytest.skip(str(e))
    tmp = tmp_path_factory.mktemp("drums")
    folder = tmp / "sounds"
    folder.mkdir()
    for i in range(4):  # one hit pair per clip: kick+hat, snare+hat, kick+open hat, ...
        sf.write(folder / f"drums_{i}.wav", drums[i * SR // 2:(i + 1) * SR // 2], SR)
    cfg = TrainConfig(mode="unpitched", steps=3000, max_seconds=10.0, batch=128,
                      enc_hidden=(64,), dec_hidden=(64, 64), eval_every=500, progress=False,
                      licence="FluidR3 GM (MIT)")
    return cut(train(folder, tmp / "ck.pt", cfg), tmp / "model", name="drums")


def test_trained_drum_model_plays_a_score(drum_model: Path):
    dec = Decoder(drum_model)
    assert dec.mode == "unpitched"
    score = parse_text("0 param decay_ms 300\n0 param sustain 0\n"
                       "0 latent 0 0\n0 note 36 1\n0.25 latent 1 1\n0.25 note 38 0.8\n"
                       "0.5 latent 0 1\n0.5 note 42 1\n0.75 latent 1 0\n0.75 note 46 0.6\n")
    a = render(dec, score, SR, block_frames=512)
    b = render(dec, score, SR, block_frames=441)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and np.abs(a).max() <= 1.0
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) > 1e-3  # not silent
    # the corners differ
    specs = []
    for x, y in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        eng = _engine(dec, [(0.0, "param glide_ms 0"), (0.0, f"latent {x} {y}"),
                            (0.0, "param sustain 1"), (0.0, "note 60 1")])
        sig = eng.process(int(0.4 * SR))[int(0.1 * SR):].astype(np.float64)
        specs.append(np.log(np.abs(stft(sig, 1024, 256))[4:-4].mean(axis=0) + 1e-7))
    diffs = [np.mean(np.abs(specs[i] - specs[j])) for i in range(4) for j in range(i + 1, 4)]
    assert max(diffs) > 0.3


def _band_db(y: np.ndarray, sr: int, edges_hz: np.ndarray, n: int = 4096) -> np.ndarray:
    """Mean power density (dB) of ``y`` in the bands ``edges_hz`` (Welch, Hann, n points)."""
    segs = y[:len(y) // n * n].reshape(-1, n) * np.hanning(n)
    power = (np.abs(np.fft.rfft(segs, axis=1)) ** 2).mean(axis=0)
    cum = np.interp(edges_hz, np.fft.rfftfreq(n, 1.0 / sr), np.cumsum(power))
    return 10 * np.log10(np.maximum(np.diff(cum), 1e-12) / np.diff(edges_hz))


def test_trained_model_at_44100_has_the_same_spectrum_shape(drum_model: Path):
    dec = Decoder(drum_model)
    score = [(0.0, "param glide_ms 0"), (0.0, "latent 0.3 0.6"), (0.0, "param sustain 1"),
             (0.0, "note 60 1")]
    edges_hz = np.geomspace(100.0, 20000.0, 31)  # third-octave-ish bands
    out = {sr: _engine(dec, score, sr).process(sr)[sr // 5:].astype(np.float64)
           for sr in (48000, 44100)}
    assert np.abs(out[44100]).max() > 0.01

    def shape(db: np.ndarray) -> np.ndarray:  # relative to the loudest band, 30 dB deep
        return np.maximum(db - db.max(), -30.0)

    a = shape(_band_db(out[48000], 48000, edges_hz))
    b = shape(_band_db(out[44100], 44100, edges_hz))
    assert np.corrcoef(a, b)[0, 1] > 0.95
    err = np.mean(np.abs(a - b))
    assert err < 2.0, err
    # played at the wrong speed (48 kHz samples at 44.1 kHz), every band would move by 8.8%
    wrong = shape(_band_db(out[48000], 48000, edges_hz * 48000 / 44100))
    assert err < 0.5 * np.mean(np.abs(wrong - a)), (err, np.mean(np.abs(wrong - a)))
