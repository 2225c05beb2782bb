"""The cut model on disk: ``models/NAME/`` = ``model.json`` + two safetensors files.

No torch here: the synthesizer starts with numpy alone.

``model.json`` (format ``instrument-model/1``) describes everything a host needs:

- ``mode``: ``"pitched"`` (harmonic-plus-noise) or ``"unpitched"`` (log-magnitude frames)
- ``sample_rate``, ``hop_samples``, ``n_fft``, ``window_samples`` (analysis)
- ``n_harmonics``, ``noise_band_edges_hz`` (len n_noise_bands + 1)
- ``latency_samples``: ``{"decoder": int, "encoder": int}``
- ``latent``: ``{"raw_lo": [2], "raw_hi": [2], "corpus_points": [[x, y], ...] (0..1),
  "corpus_labels": [str, ...]}`` — knob ``u`` maps to raw code ``lo + u * (hi - lo)``
- ``features``: ``{"mean": [F], "std": [F]}``: encoder input normalisation
- ``decoder`` / ``encoder``: ``{"file", "activations": [str], "inputs": str, "outputs": str}``
- ``corpus``: summary (files, minutes, labels, licence)
- ``check``: a fixed input and the outputs it gave when the model was cut; every load
  re-runs it and refuses the folder if the outputs differ.

Network convention: layer ``i`` is ``x @ W_i.T + b_i`` with tensors ``"{i}.weight"`` of shape
(out, in) and ``"{i}.bias"`` of shape (out,), then ``activations[i]``.

Pitched decoder: input ``[zx, zy, log2(f0/440)]`` (raw code); output
``[log harmonic amplitude x n_harmonics, log noise band rms x n_noise_bands]`` per frame,
normalised so the frame's power ``sum(a**2)/2 + sum(n**2)`` is 1. Unpitched decoder: input
``[zx, zy]``; output log magnitude x (n_fft//2 + 1), normalised to unit power.
Encoder: input ``(features - mean) / std`` (+ ``log2(f0/440)`` last, pitched); output raw code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instrument.errors import ModelFileError, describe

FORMAT = "instrument-model/1"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
ACTIVATIONS = ("linear", "tanh", "silu", "relu", "sigmoid", "leaky_relu")
CHECK_TOL = 1e-4


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "linear":
        return x
    if name == "tanh":
        return np.tanh(x)
    if name == "silu":  # x * sigmoid(x), via tanh so no exp can overflow
        return x * (0.5 + 0.5 * np.tanh(0.5 * x))
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "sigmoid":
        return 0.5 + 0.5 * np.tanh(0.5 * x)
    if name == "leaky_relu":
        return np.where(x > 0, x, 0.01 * x)
    raise ValueError(name)


@dataclass
class MLP:
    """A numpy multilayer perceptron: ``weights[i]`` (out, in), ``biases[i]`` (out,)."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activations: list[str]

    @property
    def n_in(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weights[-1].shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(batch, n_in) -> (batch, n_out), float32."""
        h = np.asarray(x, dtype=np.float32)
        for w, b, a in zip(self.weights, self.biases, self.activations, strict=True):
            h = _act(a, h @ w.T + b)
        return h.astype(np.float32, copy=False)

    def tensors(self) -> dict[str, np.ndarray]:
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"{i}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
            out[f"{i}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], activations: list[str], where: str) -> MLP:
        n = len(activations)
        ws, bs = [], []
        for i in range(n):
            try:
                w, b = t[f"{i}.weight"], t[f"{i}.bias"]
            except KeyError as e:
                raise ModelFileError(f"{where}: tensor {e.args[0]!r} is missing; the file "
                                     "does not match its model.json (re-run cut)") from None
            if w.ndim != 2 or b.shape != (w.shape[0],) or (ws and w.shape[1] != ws[-1].shape[0]):
                raise ModelFileError(f"{where}: layer {i} has shapes {w.shape} and {b.shape}, "
                                     "which do not chain; re-run 'instrument cut'")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ModelFileError(f"{where}: layer {i} holds NaN or inf weights; "
                                     "the training diverged or the file is damaged")
            ws.append(w.astype(np.float32))
            bs.append(b.astype(np.float32))
        for a in activations:
            if a not in ACTIVATIONS:
                raise ModelFileError(describe(f"{where}: activation", a, ", ".join(ACTIVATIONS),
                                              "re-run 'instrument cut' with this version"))
        return cls(ws, bs, list(activations))


def resolve(name_or_path: str | Path) -> Path:
    """A model name in ``models/`` or a folder path."""
    p = Path(name_or_path)
    if (p / "model.json").is_file():
        return p
    q = MODELS_DIR / str(name_or_path)
    if (q / "model.json").is_file():
        return q
    have = sorted(d.name for d in MODELS_DIR.glob("*") if (d / "model.json").is_file()) \
        if MODELS_DIR.is_dir() else []
    raise ModelFileError(describe("model", str(name_or_path),
                                  f"a folder with model.json, or one of: {', '.join(have) or '-'}",
                                  "pass a model folder or run 'instrument cut CHECKPOINT'"))


def read_meta(folder: Path) -> dict:
    path = folder / "model.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: cannot be read as JSON ({e}); re-run 'instrument cut'") \
            from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFileError(describe(f"{path}: format", got, FORMAT,
                                      "re-cut the checkpoint with this version"))
    need = ["mode", "sample_rate", "hop_samples", "n_fft", "latent", "decoder", "encoder",
            "features", "check", "latency_samples"]
    missing = [k for k in need if k not in meta]
    if missing:
        raise ModelFileError(f"{path}: keys {missing} are missing; re-run 'instrument cut'")
    if meta["mode"] not in ("pitched", "unpitched"):
        raise ModelFileError(describe(f"{path}: mode", meta["mode"], "pitched, unpitched",
                                      "re-run 'instrument cut'"))
    sr = meta["sample_rate"]
    if not isinstance(sr, int) or not 8000 <= sr <= 384000:
        raise ModelFileError(describe(f"{path}: sample_rate", sr, "8000..384000 Hz",
                                      "re-run 'instrument cut'"))
    return meta


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise ModelFileError(f"{path}: file is missing; re-run 'instrument cut'")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable safetensors file ({e}); "
                             "re-run 'instrument cut'") from None


def _check(where: str, got: np.ndarray, want: list) -> None:
    want_a = np.asarray(want, dtype=np.float32)
    if got.shape != want_a.shape:
        raise ModelFileError(f"{where}: self-check output shape {got.shape} != stored "
                             f"{want_a.shape}; the weights do not belong to this model.json")
    err = float(np.max(np.abs(got - want_a))) if got.size else 0.0
    if not math.isfinite(err) or err > CHECK_TOL * (1.0 + float(np.max(np.abs(want_a)))):
        raise ModelFileError(f"{where}: self-check differs by {err:.3g} (allowed {CHECK_TOL:g}); "
                             "the weights are damaged or from another cut")


class Decoder:
    """The synthesizer half: knob position (+ f0) -> spectral frame parameters."""

    def __init__(self, folder: str | Path):
        self.folder = resolve(folder)
        self.meta = read_meta(self.folder)
        m = self.meta
        self.name: str = m.get("name", self.folder.name)
        self.mode: str = m["mode"]
        self.sample_rate: int = m["sample_rate"]
        self.hop_samples: int = int(m["hop_samples"])
        self.n_fft: int = int(m["n_fft"])
        self.pitched = self.mode == "pitched"
        self.n_harmonics = int(m.get("n_harmonics", 0))
        self.noise_band_edges_hz = np.asarray(m.get("noise_band_edges_hz", []), np.float64)
        self.n_noise_bands = max(0, len(self.noise_band_edges_hz) - 1)
        self.raw_lo = np.asarray(m["latent"]["raw_lo"], np.float32)
        self.raw_hi = np.asarray(m["latent"]["raw_hi"], np.float32)
        self.latency_samples = int(m["latency_samples"].get("decoder", self.hop_samples))
        d = m["decoder"]
        self.net = MLP.from_tensors(_load_tensors(self.folder / d["file"]), d["activations"],
                                    str(self.folder / d["file"]))
        n_in = 3 if self.pitched else 2
        n_out = self.n_harmonics + self.n_noise_bands if self.pitched else self.n_fft // 2 + 1
        if self.net.n_in != n_in or self.net.n_out != n_out:
            raise ModelFileError(f"{self.folder}: decoder maps {self.net.n_in} -> "
                                 f"{self.net.n_out}, but a {self.mode} model needs {n_in} -> "
                                 f"{n_out}; re-run 'instrument cut'")
        c = m["check"]
        _check(f"{self.folder}: decoder", self.net(np.asarray(c["decoder_in"], np.float32)),
               c["decoder_out"])

    def raw_code(self, knob_xy: np.ndarray) -> np.ndarray:
        """(V, 2) knob 0..1 -> (V, 2) raw code."""
        return self.raw_lo + np.asarray(knob_xy, np.float32) * (self.raw_hi - self.raw_lo)

    def decode_log(self, knob_xy: np.ndarray, f0_hz: np.ndarray | None = None) -> np.ndarray:
        """(V, 2) knob (+ (V,) f0) -> (V, n_out) raw log-domain network output."""
        z = self.raw_code(knob_xy)
        if self.pitched:
            f0 = np.asarray(f0_hz, np.float32).reshape(-1, 1)
            z = np.concatenate([z, np.log2(np.maximum(f0, 1.0) / 440.0)], axis=1)
        return self.net(z)


class Encoder:
    """The compressor half: analysis features (+ f0) -> knob position 0..1."""

    def __init__(self, folder: str | Path):
        self.folder = resolve(folder)
        self.meta = read_meta(self.folder)
        m = self.meta
        self.mode = m["mode"]
        self.pitched = self.mode == "pitched"
        self.sample_rate: int = m["sample_rate"]
        self.hop_samples: int = int(m["hop_samples"])
        self.mean = np.asarray(m["features"]["mean"], np.float32)
        self.std = np.maximum(np.asarray(m["features"]["std"], np.float32), 1e-6)
        self.raw_lo = np.asarray(m["latent"]["raw_lo"], np.float32)
        self.raw_hi = np.asarray(m["latent"]["raw_hi"], np.float32)
        self.latency_samples = int(m["latency_samples"].get("encoder", 0))
        e = m["encoder"]
        self.net = MLP.from_tensors(_load_tensors(self.folder / e["file"]), e["activations"],
                                    str(self.folder / e["file"]))
        n_in = len(self.mean) + (1 if self.pitched else 0)
        if self.net.n_in != n_in or self.net.n_out != 2:
            raise ModelFileError(f"{self.folder}: encoder maps {self.net.n_in} -> "
                                 f"{self.net.n_out}, expected {n_in} -> 2; re-run 'instrument cut'")
        c = m["check"]
        _check(f"{self.folder}: encoder", self.net(np.asarray(c["encoder_in"], np.float32)),
               c["encoder_out"])

    def encode_raw(self, features: np.ndarray, f0_hz: np.ndarray | None = None) -> np.ndarray:
        x = (np.asarray(features, np.float32) - self.mean) / self.std
        if self.pitched:
            f0 = np.asarray(f0_hz, np.float32).reshape(-1, 1)
            x = np.concatenate([x, np.log2(np.maximum(f0, 1.0) / 440.0)], axis=1)
        return self.net(x)

    def encode(self, features: np.ndarray, f0_hz: np.ndarray | None = None) -> np.ndarray:
        """(N, F) features (+ (N,) f0) -> (N, 2) knob coordinates, clipped to 0..1."""
        raw = self.encode_raw(features, f0_hz)
        return np.clip((raw - self.raw_lo) / (self.raw_hi - self.raw_lo), 0.0, 1.0)


def write(folder: Path, meta: dict, decoder: MLP, encoder: MLP) -> None:
    """Write a model folder, then reload it and check it (raises ModelFileError)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    meta["format"] = FORMAT
    meta["decoder"] = {**meta.get("decoder", {}), "file": "decoder.safetensors",
                       "activations": decoder.activations}
    meta["encoder"] = {**meta.get("encoder", {}), "file": "encoder.safetensors",
                       "activations": encoder.activations}
    rng = np.random.default_rng(0)
    pitched = meta["mode"] == "pitched"
    knob = rng.uniform(0, 1, size=(4, 2)).astype(np.float32)
    lo, hi = np.asarray(meta["latent"]["raw_lo"]), np.asarray(meta["latent"]["raw_hi"])
    dec_in = (lo + knob * (hi - lo)).astype(np.float32)
    if pitched:
        dec_in = np.concatenate([dec_in, np.array([[-1.0], [-0.25], [0.0], [0.5]], np.float32)], 1)
    enc_in = rng.normal(size=(4, encoder.n_in)).astype(np.float32)
    meta["check"] = {"decoder_in": dec_in.tolist(), "decoder_out": decoder(dec_in).tolist(),
                     "encoder_in": enc_in.tolist(), "encoder_out": encoder(enc_in).tolist()}
    save_file(decoder.tensors(), str(folder / "decoder.safetensors"))
    save_file(encoder.tensors(), str(folder / "encoder.safetensors"))
    (folder / "model.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    Decoder(folder)
    Encoder(folder)
