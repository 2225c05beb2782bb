"""Cut a network trained on real audio (tests/data) and reload it; damaged folders refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("instrument.corpus.features", reason="corpus stage not present")

from instrument.errors import ModelFileError  # noqa: E402
from instrument.model.cut import cut  # noqa: E402
from instrument.model.dataset import load_folder  # noqa: E402
from instrument.model.metrics import frame_lsd_db  # noqa: E402
from instrument.model.modelfile import Decoder, Encoder  # noqa: E402
from instrument.model.train import (  # noqa: E402
    TrainConfig,
    load_checkpoint,
    model_from_checkpoint,
    train,
)

DATA = Path(__file__).parent / "data"
FLOOR = float(np.log(1e-4))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cut")
    cfg = TrainConfig(mode="pitched", steps=600, batch=128, enc_hidden=(64,),
                      dec_hidden=(64, 64), eval_every=100, progress=False,
                      licence="FluidR3 GM (MIT)")
    ck = train(DATA, tmp / "ck.pt", cfg)
    return ck, cut(ck, tmp / "model", name="tiny")


def test_cut_folder_reloads_and_numpy_equals_torch(trained: tuple[Path, Path]) -> None:
    ck, folder = trained
    model = model_from_checkpoint(load_checkpoint(ck))
    dec, enc = Decoder(folder), Encoder(folder)
    knob = np.random.default_rng(0).uniform(0, 1, size=(20, 2)).astype(np.float32)
    f0 = np.linspace(100, 800, 20).astype(np.float32)
    with torch.no_grad():
        want = model.decode(torch.as_tensor(dec.raw_code(knob)),
                            torch.as_tensor(np.log2(f0 / 440.0))).numpy()
    np.testing.assert_allclose(dec.decode_log(knob, f0), want, atol=1e-4)
    data = load_folder(DATA, 48000, mode="pitched")
    with torch.no_grad():
        want_code = model.encode(torch.as_tensor(data.features[:50]),
                                 torch.as_tensor(data.log2_f0[:50])).numpy()
    f0s = 440.0 * 2.0 ** data.log2_f0[:50]
    np.testing.assert_allclose(enc.encode_raw(data.features[:50], f0s), want_code, atol=1e-4)
    m = dec.meta
    assert m["name"] == "tiny" and m["n_harmonics"] == 64
    assert len(m["noise_band_edges_hz"]) == 33 and m["noise_band_edges_hz"][-1] == 24000
    assert m["latency_samples"]["decoder"] == 256 and m["latency_samples"]["encoder"] > 0
    assert m["corpus"]["licence"] == "FluidR3 GM (MIT)"
    assert m["training"]["lsd_db"] > 0 and m["training"]["pca_lsd_db"] > 0


def test_calibrated_square_covers_corpus(trained: tuple[Path, Path]) -> None:
    _, folder = trained
    enc = Encoder(folder)
    data = load_folder(DATA, 48000, mode="pitched")
    raw = enc.encode_raw(data.features, 440.0 * 2.0 ** data.log2_f0)
    inside = np.all((raw >= enc.raw_lo) & (raw <= enc.raw_hi), axis=1).mean()
    assert inside >= 0.95
    pts = np.array(enc.meta["latent"]["corpus_points"])
    assert pts.min() >= 0 and pts.max() <= 1
    assert len(enc.meta["latent"]["corpus_labels"]) == len(pts)
    assert set(enc.meta["latent"]["corpus_labels"]) <= set(data.clip_labels)
    spread = pts.max(axis=0) - pts.min(axis=0)
    assert np.all(spread > 0.5)  # the corpus fills the square, not one corner


def test_corners_differ_and_sweep_is_continuous(trained: tuple[Path, Path]) -> None:
    dec = Decoder(trained[1])
    f0 = np.full(4, 293.66, np.float32)
    corners = dec.decode_log(np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32), f0)
    for i in range(4):
        for j in range(i + 1, 4):
            assert frame_lsd_db(corners[i:i + 1], corners[j:j + 1], FLOOR)[0] > 3.0
    n = 401
    t = np.linspace(0, 1, n, dtype=np.float32)
    for path in (np.stack([t, t], 1), np.stack([t, 1 - t], 1), np.stack([t, 0 * t + .5], 1)):
        out = dec.decode_log(path, np.full(n, 293.66, np.float32))
        steps = frame_lsd_db(out[1:], out[:-1], FLOOR)
        total = frame_lsd_db(out[:1], out[-1:], FLOOR)[0]
        assert np.all(np.isfinite(out))
        assert steps.max() < 0.5 and steps.max() < 0.1 * total + 0.1


def _copy(folder: Path, tmp: Path) -> Path:
    dst = tmp / "damaged"
    shutil.copytree(folder, dst)
    return dst


def test_truncated_safetensors_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    d = _copy(trained[1], tmp_path)
    f = d / "decoder.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ModelFileError, match=r"decoder\.safetensors.*safetensors"):
        Decoder(d)


def test_wrong_format_version_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    d = _copy(trained[1], tmp_path)
    meta = json.loads((d / "model.json").read_text())
    meta["format"] = "instrument-model/99"
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"model\.json: format.*instrument-model/99"):
        Decoder(d)


def _nan_weight(t: dict) -> None:
    t["0.weight"][0, 0] = np.nan


def _narrow_layer(t: dict) -> None:
    t["1.weight"] = t["1.weight"][:, :-1].copy()


def _shift_bias(t: dict) -> None:
    t["0.bias"] = t["0.bias"] + 0.5


@pytest.mark.parametrize("name,edit,load,match", [
    ("encoder.safetensors", _nan_weight, Encoder, r"encoder\.safetensors: layer 0 .*NaN"),
    ("decoder.safetensors", _narrow_layer, Decoder,
     r"decoder\.safetensors: layer 1 .*do not chain"),
    ("decoder.safetensors", _shift_bias, Decoder, "self-check differs"),  # another cut's weights
], ids=["nan_weights", "mismatched_shapes", "weights_from_another_cut"])
def test_damaged_weights_refused(trained: tuple[Path, Path], tmp_path: Path, name, edit, load,
                                 match) -> None:
    from safetensors.numpy import load_file, save_file
    d = _copy(trained[1], tmp_path)
    t = load_file(str(d / name))
    edit(t)
    save_file(t, str(d / name))
    with pytest.raises(ModelFileError, match=match):
        load(d)
