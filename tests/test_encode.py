"""The encoder on real sounds: offline trajectories, and where trained sounds land.

The placement tests need the shipped model (``models/default``, built by
``python models/build_default.py``) and the committed corpus in ``tests/data``; they skip
with that reason until the model exists.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from instrument.listen.encode import encode, encode_file, read_csv
from instrument.model.modelfile import MODELS_DIR, Encoder

DATA = Path(__file__).parent / "data"
DEFAULT = MODELS_DIR / "default"
needs_default = pytest.mark.skipif(
    not (DEFAULT / "model.json").is_file() or not any(DATA.glob("*.wav")),
    reason="needs models/default (python models/build_default.py) and tests/data/*.wav")


def midi_hz(note: int) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def sustained(coords, t0_s: float = 0.08, t1_s: float = 0.36) -> np.ndarray:
    """(n, 2) positions of the sounding, voiced frames in the held part of a test note."""
    return np.array([[c.x, c.y] for c in coords
                     if t0_s <= c.time_s <= t1_s and not c.silent and c.voiced])


def test_encode_entry_point_writes_csv_and_picture(random_model_dir, tmp_path):
    import soundfile as sf

    t = np.arange(int(0.3 * 48000)) / 48000
    wav = tmp_path / "in.wav"
    sf.write(str(wav), (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 48000)
    coords = encode(wav, model=random_model_dir("pitched"), out=tmp_path / "o.csv",
                    plot=tmp_path / "o.png")
    assert len(read_csv(tmp_path / "o.csv")) == len(coords) > 10
    assert (tmp_path / "o.png").stat().st_size > 5000
    # the default output name sits next to the input
    encode(wav, model=random_model_dir("pitched"))
    assert (tmp_path / "in.trajectory.csv").is_file()


@needs_default
def test_a_training_sound_lands_near_its_training_encoding():
    from instrument.corpus.features import analyze
    from instrument.corpus.read import read_file

    enc = Encoder(DEFAULT)
    for name in ("flute_62", "trumpet_62", "violin_55"):
        path = DATA / f"{name}.wav"
        audio = read_file(path, enc.sample_rate)
        fr = analyze(audio, enc.sample_rate, enc.mode, f0_hz=midi_hz(int(name.split("_")[1])))
        hop_s = enc.hop_samples / enc.sample_rate
        keep = [i for i in range(len(fr.voiced))
                if 0.08 <= i * hop_s <= 0.36 and fr.voiced[i] and fr.loudness_db[i] > -70]
        trained = enc.encode(fr.features[keep], fr.f0_hz[keep] if enc.pitched else None)
        live = sustained(encode_file(enc, path, block_frames=441))
        assert len(live) > 10, name
        d = math.dist(np.median(live, axis=0), np.median(trained, axis=0))
        assert d < 0.08, (name, d)


@needs_default
def test_sounds_from_different_corners_land_far_apart():
    enc = Encoder(DEFAULT)
    lat = enc.meta["latent"]
    pts = np.asarray(lat["corpus_points"], np.float64)
    labels = np.asarray(lat["corpus_labels"])
    have = sorted({p.stem.rsplit("_", 1)[0] for p in DATA.glob("*.wav")} & set(labels))
    if len(have) < 2:
        pytest.skip(f"tests/data labels {have} are not in the model's corpus")
    centre = {lab: pts[labels == lab].mean(axis=0) for lab in have}
    a, b = max(itertools.combinations(have, 2),
               key=lambda ab: math.dist(centre[ab[0]], centre[ab[1]]))
    apart = math.dist(centre[a], centre[b])
    got = {lab: np.median(sustained(encode_file(enc, DATA / f"{lab}_62.wav")), axis=0)
           for lab in (a, b)}
    d = math.dist(got[a], got[b])
    assert d > 0.5 * apart and d > 0.1, (a, b, d, apart)
    # and each lands nearer its own region than the other's
    assert math.dist(got[a], centre[a]) < math.dist(got[a], centre[b])
    assert math.dist(got[b], centre[b]) < math.dist(got[b], centre[a])
