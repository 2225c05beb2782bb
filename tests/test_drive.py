"""Drive mode: input audio in, resynthesized audio out; the output follows the input.

The same path as ``instrument play --follow``, stepped block by block without threads:
Follower (encoder) -> Drive (commands) -> Engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instrument.control.commands import Gate, SetLatent, SetParam
from instrument.corpus.read import read_file
from instrument.engine.engine import Engine
from instrument.listen.follower import Follower
from instrument.listen.live import Drive
from instrument.model.modelfile import MODELS_DIR, Decoder, Encoder

DATA = Path(__file__).parent / "data"
SR = 48000
BLOCK = 256


@pytest.fixture(scope="module")
def model():
    if not (MODELS_DIR / "default" / "model.json").is_file():
        pytest.fail("models/default is missing: run python models/build_default.py")
    return Decoder("default"), Encoder("default")


def _drive(model, audio: np.ndarray) -> tuple[np.ndarray, list]:
    dec, enc = model
    eng = Engine(dec, SR)
    fol = Follower(enc, SR)
    drive = Drive(eng.send)
    out, coords = [], []
    for i in range(0, len(audio) - BLOCK + 1, BLOCK):
        c = fol.process(audio[i:i + BLOCK])
        coords += c
        drive(c)
        out.append(eng.process(BLOCK))
    return np.concatenate(out), coords


def _static(model, xy, f0_hz: float, seconds: float) -> np.ndarray:
    eng = Engine(model[0], SR)
    for cmd in (SetParam("glide_ms", 0.0), SetLatent(*xy), SetParam("drone_hz", f0_hz),
                Gate(True)):
        eng.send(cmd)
    return eng.process(int(seconds * SR))


def _shape_db(x: np.ndarray) -> np.ndarray:
    n = 4096
    frames = [x[i:i + n] * np.hanning(n) for i in range(0, len(x) - n, n // 2)]
    db = 10 * np.log10(np.mean([np.abs(np.fft.rfft(f)) ** 2 for f in frames], 0) + 1e-12)
    db = db[10:700]  # ~120 Hz .. 8 kHz
    return db - db.mean()


def _lsd(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_drive_mode_output_follows_the_input_position(model):
    # the two training sounds at the same pitch that the encoder puts farthest apart
    files = sorted(DATA.glob("*_62.wav"))
    enc_pos = {}
    for f in files:
        _, coords = _drive(model, read_file(f, SR))
        sounding = [(c.x, c.y) for c in coords if not c.silent]
        enc_pos[f] = np.median(np.array(sounding), axis=0)
    pairs = [(a, b) for i, a in enumerate(files) for b in files[i + 1:]]
    fa, fb = max(pairs, key=lambda p: np.linalg.norm(enc_pos[p[0]] - enc_pos[p[1]]))
    assert np.linalg.norm(enc_pos[fa] - enc_pos[fb]) > 0.2, enc_pos

    outs, f0s = {}, {}
    for f in (fa, fb):
        y, coords = _drive(model, read_file(f, SR))
        voiced = [c.f0_hz for c in coords if c.voiced]
        assert voiced, f"no voiced frame tracked in {f.name}"
        f0s[f] = float(np.median(voiced))
        assert abs(1200 * np.log2(f0s[f] / 293.66)) < 30  # D4, MIDI 62
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
        sounding = y[int(0.1 * SR):int(0.5 * SR)]
        assert np.sqrt(np.mean(sounding ** 2)) > 1e-3, f"drive mode made no sound for {f.name}"
        outs[f] = _shape_db(sounding)
    refs = {f: _shape_db(_static(model, enc_pos[f], f0s[f], 0.6)[int(0.1 * SR):]) for f in (fa, fb)}
    # each driven output is closer to the synthesizer at its own input's position
    assert _lsd(outs[fa], refs[fa]) < _lsd(outs[fa], refs[fb])
    assert _lsd(outs[fb], refs[fb]) < _lsd(outs[fb], refs[fa])


def test_drive_mode_gates_off_on_silence(model):
    tone = read_file(DATA / "flute_62.wav", SR)
    audio = np.concatenate([tone, np.zeros(SR, np.float32)])
    y, coords = _drive(model, audio)
    assert coords[-1].silent
    tail = y[-SR // 4:]
    assert np.max(np.abs(tail)) < 1e-3, "the drone kept sounding after the input went silent"
    # the position held through the silence: no jump to a corner
    last_sounding = [c for c in coords if not c.silent][-1]
    assert (coords[-1].x, coords[-1].y) == (last_sounding.x, last_sounding.y)
