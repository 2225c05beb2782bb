"""Engine: block-size independence, pitch, safety, glide, steal/swap clicks, latent range."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CASES, cents, click_ratio, estimate_f0

from instrument.control.commands import (
    FreezeLatent,
    Gate,
    LoadPatch,
    NoteOff,
    PitchBend,
    SetLatent,
    SetParam,
    parse,
)
from instrument.engine.engine import QUEUE_CAPACITY, RELEASE_RESERVE, Engine, note_hz
from instrument.errors import ConfigError
from instrument.model.modelfile import Decoder

SR = 48000


def _engine(decoder: Decoder, score: list[tuple[float, str]], sr: int = SR, **kw) -> Engine:
    eng = Engine(decoder, sr, **kw)
    for t, text in score:
        eng.schedule(parse(text), int(round(t * sr)))
    return eng


def _run(eng: Engine, blocks: list[int]) -> np.ndarray:
    return np.concatenate([eng.process(b) for b in blocks])


BUSY_SCORE = [(0.0, "note 60 0.9"), (0.01, "latent 0.1 0.9"), (0.02, "note 64 0.5"),
              (0.05, "bend 0.7"), (0.07, "param gain_db 3"), (0.09, "off 60"),
              (0.1, "gate 1"), (0.12, "param noise_db 6"), (0.15, "alloff")]


def _blocks(total: int, size: int) -> list[int]:
    return [size] * (total // size) + ([total % size] if total % size else [])


@pytest.mark.parametrize("size", [1, 64, 65, 441, 4096])
def test_output_is_identical_whatever_the_block_size(pitched_decoder: Decoder, size: int):
    total = 9000
    ref = _run(_engine(pitched_decoder, BUSY_SCORE), [total])
    got = _run(_engine(pitched_decoder, BUSY_SCORE), _blocks(total, size))
    assert np.abs(ref).max() > 0.01  # something plays
    np.testing.assert_array_equal(got, ref)


def test_host_block_sequence_from_cases(pitched_decoder: Decoder):
    seq = json.loads((CASES / "realtime/callback_frames_sequence.json").read_text())
    blocks = seq["variable_blocksize_frames"] * 2  # includes 0, 1, 441, 4096
    ref = _run(_engine(pitched_decoder, BUSY_SCORE), [sum(blocks)])
    got = _run(_engine(pitched_decoder, BUSY_SCORE), blocks)
    np.testing.assert_array_equal(got, ref)


def test_same_seed_same_output_and_reset_restarts(pitched_decoder: Decoder):
    a = _engine(pitched_decoder, BUSY_SCORE)
    first = a.process(6000)
    b = _engine(pitched_decoder, BUSY_SCORE)
    np.testing.assert_array_equal(b.process(6000), first)
    a.reset()
    for t, text in BUSY_SCORE:
        a.schedule(parse(text), int(round(t * SR)))
    np.testing.assert_array_equal(a.process(6000), first)


def _steady(decoder: Decoder, score, sr: int, seconds: float = 1.5) -> np.ndarray:
    eng = _engine(decoder, [(0.0, "param noise_db -60"), *score], sr)
    y = eng.process(int(seconds * sr))
    return y[int(0.3 * sr):]


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
def test_a4_plays_440_hz_at_any_output_rate(pitched_decoder: Decoder, sr: int):
    y = _steady(pitched_decoder, [(0.0, "note 69 1")], sr)
    assert abs(cents(estimate_f0(y, sr), 440.0)) < 3.0


def test_full_bend_up_is_plus_200_cents(pitched_decoder: Decoder):
    y = _steady(pitched_decoder, [(0.0, "param bend_range_st 2"), (0.0, "bend 1"),
                                  (0.0, "note 69 1")], SR)
    assert abs(cents(estimate_f0(y, SR), 440.0) - 200.0) < 3.0


def test_bend_during_a_note_glides_without_a_jump(pitched_decoder: Decoder):
    eng = _engine(pitched_decoder, [(0.0, "param noise_db -60"), (0.0, "note 69 1"),
                                    (0.3, "bend 1"), (0.6, "bend -1")])
    y = eng.process(int(0.9 * SR))
    steady = np.abs(np.diff(y[int(0.1 * SR):int(0.29 * SR)])).max()
    assert np.abs(np.diff(y[int(0.29 * SR):])).max() < 1.5 * steady
    late = y[int(0.7 * SR):]
    assert abs(cents(estimate_f0(late, SR), 440.0) + 200.0) < 3.0


def test_reference_level_is_about_minus_12_dbfs(pitched_decoder: Decoder):
    y = _steady(pitched_decoder, [(0.0, "param gain_db 0"), (0.0, "param sustain 1"),
                                  (0.0, "note 69 1")], SR)
    rms_db = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    assert -13.0 < rms_db < -11.0


class NaNDecoder:
    """A decoder that returns NaN/inf for some frames (a real Decoder wrapped, not a mock)."""

    def __init__(self, inner: Decoder):
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode_log(self, knob_xy, f0_hz):
        out = self.inner.decode_log(knob_xy, f0_hz).copy()
        self.calls += 1
        if self.calls % 3 == 0:
            out[:, ::2] = np.nan
        if self.calls % 5 == 0:
            out[:, 1::3] = np.inf
        return out


def test_sixteen_loud_voices_and_nan_frames_stay_within_one(pitched_decoder: Decoder):
    score = [(0.0, "param gain_db 12"), (0.0, "param noise_db 12"),
             (0.0, "param harmonic_db 12"), (0.0, "param attack_ms 0.5"),
             (0.0, "param glide_ms 2000"), (0.0, "latent 1 0")]  # moving: decoded every hop
    score += [(0.0, f"note {36 + 5 * k} 1") for k in range(16)]
    for dec in (pitched_decoder, NaNDecoder(pitched_decoder)):
        eng = _engine(dec, score)
        y = eng.process(SR)
        assert np.isfinite(y).all()
        assert np.abs(y).max() <= 1.0
        assert np.abs(y).max() > 0.5  # loud, so the limiter really worked
        assert eng.status()["limiter_hops"] > 0
    assert eng.status()["sanitized_frames"] > 0


def test_latent_sweep_is_continuous(pitched_decoder: Decoder):
    eng = _engine(pitched_decoder, [(0.0, "param glide_ms 200"), (0.0, "note 57 1"),
                                    (0.0, "param noise_db -60")])
    still = eng.process(int(0.3 * SR))
    jump_still = np.abs(np.diff(still[int(0.1 * SR):])).max()
    parts = []
    for k in range(20):  # a sweep corner to corner in steps, glided
        eng.send(parse(f"latent {k / 19:.4f} {1 - k / 19:.4f}"))
        parts.append(eng.process(2400))
    sweep = np.concatenate([still, *parts])
    assert jump_still > 0
    assert click_ratio(sweep) < 1.5
    assert eng.status()["latent"][0] > 0.8


def _high_band(y: np.ndarray, sr: int = SR, above_hz: float = 12000.0) -> np.ndarray:
    """|signal above above_hz| away from the ends: a click is broadband, low notes are not."""
    spec = np.fft.rfft(y.astype(np.float64))
    spec[np.fft.rfftfreq(len(y), 1.0 / sr) < above_hz] = 0.0
    return np.abs(np.fft.irfft(spec, len(y)))[sr // 20:-sr // 20]


def test_steal_and_retrigger_do_not_click(pitched_decoder: Decoder):
    # low notes: their 64 harmonics stay below 8 kHz, so energy above 12 kHz means a click
    score = [(0.0, "param voices 2"), (0.0, "param noise_db -60"), (0.0, "note 36 1"),
             (0.1, "note 40 1"), (0.3, "note 43 1"), (0.5, "note 43 1"), (0.7, "note 47 1")]
    eng = _engine(pitched_decoder, score)
    y = eng.process(SR)
    assert eng.status()["stolen"] == 2
    assert eng.status()["voices"] == 2
    assert np.abs(y).max() > 0.1
    # the same notes cut hard where the first steal happens: what a click looks like
    one = _engine(pitched_decoder, score[:3]).process(SR)
    one[int(0.3 * SR) + 100:] = 0.0
    assert _high_band(one).max() > 0.005
    assert _high_band(y).max() < 0.001


def test_swap_decoder_crossfades(random_model_dir, pitched_decoder: Decoder):
    other = Decoder(random_model_dir("pitched", seed=7))
    eng = _engine(pitched_decoder, [(0.0, "param noise_db -60"), (0.0, "note 62 1")])
    a = eng.process(int(0.3 * SR))
    eng.swap_decoder(other)
    b = eng.process(int(0.3 * SR))
    steady = max(np.abs(np.diff(a[int(0.1 * SR):])).max(), np.abs(np.diff(b[1000:])).max())
    assert np.abs(np.diff(np.concatenate([a[-1:], b]))).max() <= 1.2 * steady
    assert click_ratio(np.concatenate([a, b])) < 1.5
    assert eng.status()["model"] == other.name
    # the swapped model sounds different
    sa, sb = np.abs(np.fft.rfft(a[-8192:])), np.abs(np.fft.rfft(b[-8192:]))
    assert np.corrcoef(sa, sb)[0, 1] < 0.99


def _spectrum_at(decoder: Decoder, x: float, y: float) -> np.ndarray:
    eng = _engine(decoder, [(0.0, "param glide_ms 0"), (0.0, f"latent {x} {y}"),
                            (0.0, "note 57 1")])
    sig = eng.process(int(0.5 * SR))[int(0.2 * SR):]
    mag = np.abs(np.fft.rfft(sig * np.hanning(len(sig))))
    return np.log(mag + 1e-6)


def test_four_corners_give_different_spectra(pitched_decoder: Decoder):
    specs = [_spectrum_at(pitched_decoder, x, y) for x, y in [(0, 0), (1, 0), (0, 1), (1, 1)]]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.mean(np.abs(specs[i] - specs[j])) > 0.1


def test_freeze_holds_the_latent_and_patch_is_ignored(pitched_decoder: Decoder):
    eng = Engine(pitched_decoder, SR)
    eng.send(parse("freeze 1"))
    eng.send(parse("latent 0.9 0.1"))
    eng.send(LoadPatch("patches/default.toml"))
    eng.process(512)
    assert eng.status()["latent"] == [0.5, 0.5]
    assert eng.status()["ignored"] == 1
    eng.send(parse("freeze 0"))
    eng.send(parse("latent_x 0.9"))  # y holds
    eng.process(SR // 2)
    lat = eng.status()["latent"]
    assert lat[0] == pytest.approx(0.9, abs=1e-3) and lat[1] == 0.5


def test_release_ends_the_voice_and_gate_drones(pitched_decoder: Decoder):
    eng = _engine(pitched_decoder, [(0.0, "param release_ms 50"), (0.0, "note 60"),
                                    (0.1, "off 60"), (0.1, "param drone_hz 110"),
                                    (0.1, "gate 1")])
    eng.process(int(0.5 * SR))
    st = eng.status()
    assert st["voices"] == 1  # the note ended, the drone plays
    eng.send(parse("param noise_db -60"))
    y = eng.process(SR)[SR // 2:]
    assert abs(cents(estimate_f0(y, SR), 110.0)) < 3.0


def test_full_queue_drops_note_ons_and_counts(pitched_decoder: Decoder):
    eng = Engine(pitched_decoder, SR)
    sent = [eng.send(parse("note 60")) for _ in range(QUEUE_CAPACITY + 5)]
    assert sent.count(False) == 5 and eng.status()["dropped"] == 5
    eng.process(256)
    assert eng.send(parse("note 60"))


def test_a_flood_of_controls_is_never_refused_and_the_latest_wins(pitched_decoder: Decoder):
    eng = Engine(pitched_decoder, SR)
    n = 5 * QUEUE_CAPACITY
    sent = [eng.send(SetLatent(k / n, 1 - k / n)) for k in range(n)]
    sent += [eng.send(SetParam("gain_db", -k / n)) for k in range(n)]
    sent += [eng.send(PitchBend(k / n)) for k in range(n)]
    sent.append(eng.send(SetLatent(y=0.25)))  # y only: x keeps the flood's last value
    assert all(sent) and eng.status()["dropped"] == 0
    assert eng.send(parse("note 60"))  # the event queue is still empty
    eng.process(eng.hop_samples)
    st = eng.status()
    assert st["params"]["gain_db"] == -(n - 1) / n and eng._bend == (n - 1) / n
    assert eng._latent_target == [(n - 1) / n, 0.25] and st["voices"] == 1


def test_note_off_is_never_dropped_by_a_full_queue(pitched_decoder: Decoder):
    eng = Engine(pitched_decoder, SR)
    eng.send(parse("note 60"))
    eng.process(eng.hop_samples)
    for _ in range(QUEUE_CAPACITY + 10):  # a flood of note-ons (here: retriggers) fills it
        eng.send(parse("note 72 0.1"))
    assert eng.send(NoteOff(60)) and eng.send(Gate(False))  # the reserve takes releases
    for _ in range(RELEASE_RESERVE + 10):  # past the reserve: one release of every voice
        assert eng.send(NoteOff(61))
    assert eng.status()["release_overflow"] > 0
    eng.process(eng.hop_samples)
    assert not any(v.held for v in eng._voices)  # nothing is stuck
    eng.process(SR)  # release_ms 250
    assert eng.status()["voices"] == 0


def test_controls_apply_before_the_hops_events_in_order(pitched_decoder: Decoder):
    """Within one hop: changed controls first (in the order sent), then events in order."""
    eng = Engine(pitched_decoder, SR)
    eng.send(parse("note 60"))
    eng.send(SetLatent(0.9, 0.1))
    eng.send(NoteOff(60))  # the same hop: on then off, never stuck, the latent moved
    eng.process(eng.hop_samples)
    assert not any(v.held for v in eng._voices) and eng._latent_target == [0.9, 0.1]
    eng.send(parse("note 64"))
    eng.send(parse("bend 1"))  # sent after the note-on, but the voice starts bent
    eng.process(eng.hop_samples)
    (voice,) = eng._voices
    assert voice.held
    assert eng._harm.f0_hz[voice.slot] == pytest.approx(note_hz(66.0))  # +2 st, no chirp
    eng.send(FreezeLatent(True))
    eng.send(SetLatent(0.2, 0.2))  # after the freeze: held
    eng.send(FreezeLatent(False))
    eng.process(eng.hop_samples)
    assert eng._latent_target == [0.9, 0.1] and not eng.status()["frozen"]
    eng.send(SetLatent(x=0.3))
    eng.send(SetParam("latent_x", 0.7))  # the same target: the later one wins
    eng.process(eng.hop_samples)
    assert eng._latent_target[0] == 0.7


def test_reset_forgets_controls_sent_before_it(pitched_decoder: Decoder):
    eng = Engine(pitched_decoder, SR)
    eng.send(SetLatent(0.9, 0.9))
    eng.send(SetParam("gain_db", -30.0))
    eng.reset()
    eng.process(eng.hop_samples)
    assert eng.status()["latent"] == [0.5, 0.5] and eng.status()["params"]["gain_db"] == -6.0


def test_live_sends_are_block_size_independent(pitched_decoder: Decoder):
    """Controls and events sent between blocks land on the same hop whatever the blocks."""
    def run(block: int) -> np.ndarray:
        eng = Engine(pitched_decoder, SR)
        out = []
        for cmds in ([parse("note 60")], [SetLatent(0.2, 0.8), parse("bend 0.5")],
                     [SetParam("gain_db", -12.0), NoteOff(60)], []):
            for c in cmds:
                eng.send(c)
            hop = eng.hop_samples
            out.append(_run(eng, _blocks(hop, block)))  # one hop per step
            out.append(_run(eng, _blocks(3 * hop, block)))
        return np.concatenate(out)

    ref = run(256)
    assert np.abs(ref).max() > 0.01
    for block in (1, 64, 100):
        np.testing.assert_array_equal(run(block), ref)


def test_bad_arguments_raise_clear_errors(pitched_decoder: Decoder, random_model_dir):
    with pytest.raises(ConfigError, match="sample_rate"):
        Engine(pitched_decoder, 1000)
    eng = Engine(pitched_decoder, SR)
    with pytest.raises(ConfigError, match="frames"):
        eng.process(-1)
    assert eng.process(0).shape == (0,)
    with pytest.raises(ConfigError, match="swap_decoder"):  # kinds do not mix
        eng.swap_decoder(Decoder(random_model_dir("unpitched")))
    with pytest.raises(ConfigError, match="hop_samples"):
        Engine(Decoder(random_model_dir("unpitched")), SR, hop_samples=128)


def test_latency_and_status_fields(pitched_decoder: Decoder):
    eng = Engine(pitched_decoder, 44100)
    st = eng.status()
    for key in ("sample_rate", "block", "latency_ms", "voices", "xruns", "dropped", "model"):
        assert key in st
    assert eng.hop_samples == round(256 * 44100 / 48000)
    assert eng.latency_samples == eng.hop_samples
    assert Path(CASES).is_dir()


def test_held_hops_give_the_samples_of_full_hops(pitched_decoder: Decoder):
    """A settled note takes the hold path (no per-hop bookkeeping); a no-op control every
    hop forces the full path: the samples must be the same, and so must the release."""
    held, full = Engine(pitched_decoder, SR), Engine(pitched_decoder, SR)
    for eng in (held, full):
        eng.send(parse("note 57 0.8"))
        eng.send(parse("param decay_ms 20"))
    hop = held.hop_samples
    out_held, out_full = [], []
    for i in range(400):
        if i == 300:
            held.send(NoteOff(57))
            full.send(NoteOff(57))
        full.send(SetParam("gain_db", -6.0))  # the default: changes nothing but the path
        out_held.append(held.process(hop))
        out_full.append(full.process(hop))
        if i == 250:
            assert held._hold  # settled: its next hop takes the hold path (full's cannot)
    a, b = np.concatenate(out_held), np.concatenate(out_full)
    assert np.abs(a).max() > 0.05 and np.abs(a[-hop:]).max() == 0.0  # played, then released
    np.testing.assert_array_equal(a, b)
