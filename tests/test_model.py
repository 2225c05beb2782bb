"""The nets and their numpy export (no corpus needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instrument.model.calibrate import calibrate
from instrument.model.metrics import lsd_db
from instrument.model.modelfile import ACTIVATIONS
from instrument.model.nets import AutoEncoder, TorchMLP


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_torch_mlp_exports_to_equal_numpy_mlp(act: str) -> None:
    torch.manual_seed(0)
    net = TorchMLP([5, 16, 7], act, "linear")
    x = torch.randn(9, 5)
    with torch.no_grad():
        want = net(x).numpy()
    np.testing.assert_allclose(net.to_numpy()(x.numpy()), want, atol=1e-5)


def test_decoder_export_folds_destandardisation() -> None:
    torch.manual_seed(1)
    m = AutoEncoder("pitched", 96, [32], [32, 32])
    m.set_normalisation(np.linspace(-8, -1, 96), np.linspace(0.5, 3, 96))
    z = torch.rand(6, 2) * 2 - 1
    f = torch.linspace(-2, 1, 6)
    with torch.no_grad():
        want = m.decode(z, f).numpy()
    got = m.numpy_decoder()(np.concatenate([z.numpy(), f.numpy()[:, None]], 1))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert m.numpy_decoder().activations[-1] == "linear"
    assert m.numpy_encoder().activations[-1] == "tanh"


def test_unpitched_shapes() -> None:
    m = AutoEncoder("unpitched", 513, [64], [64])
    code = m.encode(torch.zeros(3, 513), None)
    assert code.shape == (3, 2)
    assert m.decode(code, None).shape == (3, 513)
    assert m.numpy_decoder().n_in == 2 and m.numpy_encoder().n_in == 513


def test_lsd_counts_only_audible_valid_bins() -> None:
    floor = float(np.log(1e-4))
    t = np.full((2, 4), floor)
    t[:, 0] = np.log(0.5)
    p = t.copy()
    p[:, 0] += np.log(10.0)            # +20 dB on the one audible bin
    p[:, 1] = np.log(0.9)              # error on a floored bin: ignored
    assert lsd_db(p, t, np.ones_like(t, bool), floor) == pytest.approx(20.0)


def test_calibration_box_covers_codes() -> None:
    rng = np.random.default_rng(0)
    codes = rng.normal([0.2, -0.1], [0.05, 0.2], size=(2000, 2))
    cal = calibrate(codes, ["a"] * 2000)
    lo, hi = np.array(cal["raw_lo"]), np.array(cal["raw_hi"])
    inside = np.all((codes >= lo) & (codes <= hi), axis=1).mean()
    assert inside >= 0.98
    pts = np.array(cal["corpus_points"])
    assert len(pts) == 500 and pts.min() >= 0 and pts.max() <= 1
    assert len(cal["corpus_labels"]) == 500


def test_shipped_default_model_loads_and_spans_timbres() -> None:
    from instrument.model.metrics import frame_lsd_db
    from instrument.model.modelfile import MODELS_DIR, Decoder, Encoder

    dec, enc = Decoder(MODELS_DIR / "default"), Encoder(MODELS_DIR / "default")
    assert dec.pitched and enc.pitched and dec.sample_rate == 48000
    assert "MIT" in dec.meta["corpus"]["licence"]
    corners = dec.decode_log(np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32),
                             np.full(4, 261.63, np.float32))
    floor = float(np.log(1e-4))
    d = [frame_lsd_db(corners[i:i + 1], corners[j:j + 1], floor)[0]
         for i in range(4) for j in range(i + 1, 4)]
    assert min(d) > 3.0
    t = dec.meta["training"]
    assert t["lsd_db"] < t["pca_lsd_db"] - 1.5
