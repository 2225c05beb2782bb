"""Cut a checkpoint into a model folder (``modelfile`` format): decoder + encoder + meta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from instrument.errors import ModelFileError
from instrument.model import modelfile
from instrument.model.train import load_checkpoint, model_from_checkpoint

TORCH_NUMPY_TOL = 1e-5


def _check_against_torch(model, dec: modelfile.MLP, enc: modelfile.MLP, where: str) -> None:
    """The numpy halves must equal the torch ones on a fixed input (within 1e-5)."""
    rng = np.random.default_rng(1234)
    n = 16
    code = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    lf0 = rng.uniform(-2, 1, size=(n,)).astype(np.float32)
    feats = (model.mean.numpy() + model.std.numpy()
             * rng.normal(size=(n, len(model.mean)))).astype(np.float32)
    with torch.no_grad():
        t_dec = model.decode(torch.as_tensor(code), torch.as_tensor(lf0)).numpy()
        t_enc = model.encode(torch.as_tensor(feats), torch.as_tensor(lf0)).numpy()
    x_std = (feats - model.mean.numpy()) / model.std.numpy()
    if model.pitched:
        n_dec = dec(np.concatenate([code, lf0[:, None]], axis=1))
        n_enc = enc(np.concatenate([x_std, lf0[:, None]], axis=1))
    else:
        n_dec, n_enc = dec(code), enc(x_std)
    for half, a, b in (("decoder", n_dec, t_dec), ("encoder", n_enc, t_enc)):
        err = float(np.max(np.abs(a - b)))
        scale = 1.0 + float(np.max(np.abs(b)))
        if not np.isfinite(err) or err > TORCH_NUMPY_TOL * scale:
            raise ModelFileError(f"{where}: numpy {half} differs from the torch {half} by "
                                 f"{err:.3g} (allowed {TORCH_NUMPY_TOL:g}); the export is "
                                 "wrong: report this bug")


def cut(checkpoint: str | Path, out_folder: str | Path, name: str | None = None) -> Path:
    """Write ``out_folder`` (model.json + decoder/encoder safetensors); returns the folder."""
    from instrument.corpus import features as feat

    ck = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ck)
    out = Path(out_folder)
    spec, cal = ck["spec"], ck["calibration"]
    sr, hop = int(spec["sample_rate"]), int(spec["hop_samples"])
    pitched = spec["mode"] == "pitched"
    dec, enc = model.numpy_decoder(), model.numpy_encoder()
    _check_against_torch(model, dec, enc, str(checkpoint))
    n_h = feat.N_HARMONICS if pitched else 0
    edges = [float(e) for e in feat.noise_band_edges_hz(sr, feat.N_NOISE_BANDS)] \
        if pitched else []
    delay = feat.StreamAnalyzer(sr, spec["mode"], hop).latency_samples
    meta = {
        "name": name or out.name,
        "mode": spec["mode"],
        "sample_rate": sr,
        "hop_samples": hop,
        "n_fft": int(feat.N_FFT),
        "window_samples": int(feat.WINDOW_SAMPLES),
        "n_harmonics": int(n_h),
        "noise_band_edges_hz": edges,
        "amp_floor": float(feat.AMP_FLOOR),
        "latency_samples": {"decoder": hop, "encoder": int(delay)},
        "latent": {k: cal[k] for k in ("raw_lo", "raw_hi", "corpus_points", "corpus_labels")},
        "features": {"mean": [float(v) for v in model.mean.numpy()],
                     "std": [float(v) for v in model.std.numpy()]},
        "decoder": {"inputs": "[zx, zy, log2(f0/440)] raw code" if pitched
                    else "[zx, zy] raw code",
                    "outputs": f"log harmonic amplitude x {n_h}, log noise band rms x "
                               f"{len(edges) - 1}" if pitched
                    else f"log magnitude x {feat.N_FFT // 2 + 1}"},
        "encoder": {"inputs": "(features - mean) / std, log2(f0/440)" if pitched
                    else "(features - mean) / std", "outputs": "raw code [zx, zy]"},
        "corpus": ck.get("corpus", {}),
        "training": {**ck.get("figures", {}), "step": int(ck["step"]),
                     "complete": bool(ck.get("complete", False)),
                     "enc_hidden": spec["enc_hidden"], "dec_hidden": spec["dec_hidden"],
                     "activation": spec["activation"]},
    }
    meta["corpus"].pop("report", None)
    modelfile.write(out, meta, dec, enc)
    return out
