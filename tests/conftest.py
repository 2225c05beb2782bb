"""Shared fixtures: random-weight model folders (until a trained model exists) and helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from instrument.model.modelfile import MLP, Decoder, write

N_HARMONICS = 64
N_NOISE_BANDS = 32
CASES = Path(__file__).parent / "cases"


def mel_band_edges_hz(sample_rate: int, n_bands: int = N_NOISE_BANDS) -> np.ndarray:
    """Mel-spaced band edges 0 … sample_rate/2 (n_bands + 1 values), for test models."""
    def mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    m = np.linspace(0.0, mel(np.array(sample_rate / 2.0)), n_bands + 1)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def _random_mlp(rng: np.random.Generator, sizes: list[int], acts: list[str],
                scale: float = 1.0) -> MLP:
    ws = [rng.normal(0.0, scale / np.sqrt(a), size=(b, a)).astype(np.float32)
          for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [rng.normal(0.0, 0.1, size=(b,)).astype(np.float32) for b in sizes[1:]]
    return MLP(ws, bs, acts)


def make_random_model(folder: Path, mode: str = "pitched", sample_rate: int = 48000,
                      seed: int = 0, hop_samples: int = 256) -> Path:
    """Write a random-weight model folder (3->64->96 silu MLP for pitched)."""
    rng = np.random.default_rng(seed)
    n_fft = 1024
    if mode == "pitched":
        dec = _random_mlp(rng, [3, 64, N_HARMONICS + N_NOISE_BANDS], ["silu", "linear"], 2.0)
        # A plausible spectral tilt: log amplitude falls with harmonic number; noise lower.
        tilt = np.concatenate([-0.08 * np.arange(N_HARMONICS), np.full(N_NOISE_BANDS, -3.0)])
        dec.biases[-1] = (dec.biases[-1] + tilt).astype(np.float32)
        n_feat = N_HARMONICS + N_NOISE_BANDS
        enc = _random_mlp(rng, [n_feat + 1, 32, 2], ["tanh", "linear"])
    else:
        dec = _random_mlp(rng, [2, 64, n_fft // 2 + 1], ["silu", "linear"], 2.0)
        n_feat = n_fft // 2 + 1
        enc = _random_mlp(rng, [n_feat, 32, 2], ["tanh", "linear"])
    meta = {
        "name": f"random-{mode}-{seed}", "mode": mode, "sample_rate": sample_rate,
        "hop_samples": hop_samples, "n_fft": n_fft, "window_samples": 2048,
        "n_harmonics": N_HARMONICS if mode == "pitched" else 0,
        "noise_band_edges_hz": mel_band_edges_hz(sample_rate).tolist()
        if mode == "pitched" else [],
        "latency_samples": {"decoder": hop_samples, "encoder": 1024},
        "latent": {"raw_lo": [-2.0, -2.0], "raw_hi": [2.0, 2.0], "corpus_points": [],
                   "corpus_labels": []},
        "features": {"mean": [0.0] * n_feat, "std": [1.0] * n_feat},
        "corpus": {"files": 0, "licence": "random test weights"},
    }
    write(folder, meta, dec, enc)
    return folder


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``random_model_dir(mode="pitched", sample_rate=48000, seed=0)`` -> folder."""
    made: dict[tuple, Path] = {}

    def factory(mode: str = "pitched", sample_rate: int = 48000, seed: int = 0) -> Path:
        key = (mode, sample_rate, seed)
        if key not in made:
            made[key] = make_random_model(tmp_path_factory.mktemp(f"model-{mode}"), mode,
                                          sample_rate, seed)
        return made[key]

    return factory


@pytest.fixture(scope="session")
def pitched_decoder(random_model_dir: Callable[..., Path]) -> Decoder:
    return Decoder(random_model_dir("pitched"))


def estimate_f0(x: np.ndarray, sample_rate: int, f0_lo: float = 50.0,
                f0_hi: float = 2000.0) -> float:
    """Precise f0 of a steady harmonic tone.

    The strongest spectral peak of a long zero-padded Hann FFT (parabolic interpolation on
    log magnitude) is divided by its harmonic number, which a coarse autocorrelation gives.
    """
    x = np.asarray(x, np.float64) - np.mean(x)
    n = len(x)
    # coarse period from the autocorrelation
    spec = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:n]
    lo, hi = int(sample_rate / f0_hi), int(sample_rate / f0_lo)
    seg = ac[lo:hi]
    lag = lo + int(np.flatnonzero(seg >= 0.9 * seg.max())[0])
    while lag + 1 < hi and ac[lag + 1] > ac[lag]:
        lag += 1
    f0_coarse = sample_rate / lag
    # precise peak
    n_fft = 1 << int(np.ceil(np.log2(n * 4)))
    mag = np.abs(np.fft.rfft(x * np.hanning(n), n_fft)) + 1e-20
    k = int(np.argmax(mag[1:])) + 1
    a, b, c = np.log(mag[k - 1]), np.log(mag[k]), np.log(mag[k + 1])
    peak_hz = (k + 0.5 * (a - c) / (a - 2 * b + c)) * sample_rate / n_fft
    harmonic = max(1, round(peak_hz / f0_coarse))
    return peak_hz / harmonic


def cents(f_hz: float, ref_hz: float) -> float:
    return 1200.0 * float(np.log2(f_hz / ref_hz))


def _jack_server_name() -> str | None:
    return os.environ.get("JACK_DEFAULT_SERVER")


@pytest.fixture
def jack_server() -> str:
    """The running JACK server's name (JACK_DEFAULT_SERVER), or skip with the reason."""
    if shutil.which("jack_lsp") is None:
        pytest.skip("JACK tools (jack_lsp) are not installed")
    try:
        r = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10,
                           env={**os.environ, "JACK_NO_START_SERVER": "1"})
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"no JACK server reachable ({e})")
    if r.returncode != 0:
        pytest.skip("no JACK server reachable (start one: jackd -d dummy, and export "
                    "JACK_DEFAULT_SERVER)")
    return _jack_server_name() or "default"


def click_ratio(y: np.ndarray, window: int = 480) -> float:
    """Largest sample-to-sample jump relative to the largest jump nearby (excluding itself).

    A steady or slowly changing tone gives about 1; a click (a step) gives a jump far above
    its neighbours'. ``window`` should cover a period or two of the tone.
    """
    d = np.abs(np.diff(np.asarray(y, np.float64)))
    w = int(window)
    s = np.lib.stride_tricks.sliding_window_view(d, w - 2).max(axis=1)  # s[i] = max d[i:i+w-2]
    n = np.arange(w, len(d) - w - 1)
    near = np.maximum(s[n - w], s[n + 3])
    return float(np.max(d[n] / np.maximum(near, 1e-9)))
