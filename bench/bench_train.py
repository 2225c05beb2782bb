"""Training figures: time, held-out LSD of the autoencoder vs a 2-D PCA (same run), pitch
leakage of the code, numpy decoder speed, and (``--unpitched``) a 513-bin magnitude
autoencoder on the same audio.

    python bench/bench_train.py [--folder tests/data] [--steps 2000] [--unpitched]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from instrument.model.cut import cut
from instrument.model.dataset import load_folder
from instrument.model.modelfile import Decoder
from instrument.model.train import TrainConfig, load_checkpoint, train_arrays

ROOT = Path(__file__).resolve().parents[1]


def decoder_speed(folder: Path, n: int = 2000) -> tuple[float, float]:
    """(µs per frame at batch 1, realtime factor per voice)."""
    dec = Decoder(folder)
    knob = np.array([[0.3, 0.6]], np.float32)
    f0 = np.array([220.0], np.float32)
    for _ in range(50):
        dec.decode_log(knob, f0)
    t = time.perf_counter()
    for _ in range(n):
        dec.decode_log(knob, f0)
    us = (time.perf_counter() - t) / n * 1e6
    return us, dec.hop_samples / dec.sample_rate * 1e6 / us


def run(folder: Path, mode: str, steps: int, seconds: float | None, out: Path) -> dict:
    t0 = time.perf_counter()
    data = load_folder(folder, 48000, mode=mode)
    t_an = time.perf_counter() - t0
    cfg = TrainConfig(mode=mode, steps=steps, max_seconds=seconds, batch=256,
                      enc_hidden=(128, 128) if mode == "pitched" else (256, 128),
                      dec_hidden=(128, 128) if mode == "pitched" else (128, 256),
                      eval_every=250)
    ck = train_arrays(data, out / f"{mode}.pt", cfg)
    fig = load_checkpoint(ck)["figures"]
    fig["analysis_seconds"] = round(t_an, 2)
    fig["frames"] = int(len(data.clip))
    folder_out = cut(ck, out / mode)
    fig["decoder_us_per_frame"], fig["realtime_per_voice"] = (
        round(v, 1) for v in decoder_speed(folder_out))
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=ROOT / "tests" / "data")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--unpitched", action="store_true",
                    help="also train a 513-bin magnitude autoencoder on the same audio")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figs = {"pitched": run(args.folder, "pitched", args.steps, args.seconds, Path(tmp))}
        if args.unpitched:
            figs["unpitched"] = run(args.folder, "unpitched", args.steps, args.seconds,
                                    Path(tmp))
    for mode, f in figs.items():
        print(f"[{mode}] frames {f['frames']}  analysis {f['analysis_seconds']} s  "
              f"training {f['train_seconds']} s ({f['steps']} steps)")
        print(f"  held-out LSD: autoencoder {f['lsd_db']:.2f} dB, 2-D PCA "
              f"{f['pca_lsd_db']:.2f} dB -> gain {f['pca_lsd_db'] - f['lsd_db']:+.2f} dB "
              f"(train LSD {f['train_lsd_db']:.2f} dB)")
        if "nn_note_accuracy" in f:
            print(f"  pitch leakage: nearest-neighbour note accuracy from the code "
                  f"{f['nn_note_accuracy']:.2f} (chance {f['note_chance']:.2f})")
        print(f"  numpy decoder: {f['decoder_us_per_frame']} µs/frame at batch 1 = "
              f"{f['realtime_per_voice']}x realtime per voice")
    if "unpitched" in figs:
        print("note: the two LSDs are in their own domains (64 harmonics + 32 bands vs 513 "
              "STFT bins) and only roughly comparable")


if __name__ == "__main__":
    main()
