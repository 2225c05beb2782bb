"""Bench: how fast does a fresh network learn a stream, against an offline-trained baseline?

1. Baseline (same run): ``instrument train``'s loop (``train_arrays``) on the same material for
   ``--offline-seconds``; its LSD (dB) over all the material's frames.
2. Online: the material streamed in real time (looped), the trainer thread learning from it;
   every 0.5 s the current snapshot's LSD over the same frames. Figure: seconds from zero until
   it is within 1 dB of the baseline (goal <= 60 s on 2 cores).
3. Live xruns: the same, played through the Player on JACK (if a server is reachable) for
   ``--live-seconds``; figure: underflows (goal 0) and PortAudio status flags.

    python bench/bench_dissect.py [--folder tests/data] [--threads 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from instrument.dissect.session import Dissection
from instrument.dissect.stream import FileSource, paced
from instrument.dissect.threads import limit_blas_threads
from instrument.dissect.trainer import OnlineTrainer, valid_mask
from instrument.model.dataset import load_folder
from instrument.model.metrics import lsd_db
from instrument.model.train import TrainConfig, load_checkpoint, model_from_checkpoint, train_arrays

ROOT = Path(__file__).resolve().parents[1]


def offline_lsd(data, seconds: float, floor: float) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as td:
        cfg = TrainConfig(mode="pitched", steps=100000, max_seconds=seconds, progress=False,
                          held_out_fraction=0.2, schedule_steps=None)
        cfg.steps = 100000
        path = train_arrays(data, Path(td) / "ck.pt", cfg)
        ck = load_checkpoint(path)
    model = model_from_checkpoint(ck)
    with torch.no_grad():
        x = torch.as_tensor(data.features)
        f = torch.as_tensor(data.log2_f0)
        pred = model.decode(model.encode(x, f), f).numpy()
    return lsd_db(pred, data.features, data.valid_mask(), floor), int(ck["step"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=ROOT / "tests" / "data")
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--offline-seconds", type=float, default=60.0)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--live-seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the baseline")
    a = ap.parse_args(argv)
    limit_blas_threads(1)
    from instrument.dissect.trainer import floor_log

    floor = floor_log()
    data = load_folder(a.folder, a.rate, "pitched")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    base, base_steps = offline_lsd(data, a.offline_seconds, floor)
    print(f"offline baseline: LSD {base:.2f} dB after {base_steps} steps "
          f"({time.perf_counter() - t0:.1f} s, {a.threads} threads)")
    f0 = 440.0 * 2.0 ** data.log2_f0.astype(np.float64)
    valid = valid_mask("pitched", f0, data.n_features, a.rate)

    trainer = OnlineTrainer("pitched", a.rate, seed=0)
    sess = Dissection(trainer)
    sess.keep_history = False
    src = FileSource(a.folder, a.rate, loop=True)
    stop = threading.Event()

    def feed() -> None:
        blk = []
        for hop in paced(src.hops(), a.rate, sess.hop, stop=stop):
            blk.append(hop)
            if len(blk) == 4:
                sess.label = src.label
                sess.process_block(np.concatenate(blk))
                blk = []

    th = threading.Thread(target=feed, daemon=True)
    t0 = time.perf_counter()
    th.start()
    trainer.start()
    reached, last = None, float("nan")
    while time.perf_counter() - t0 < a.max_seconds:
        time.sleep(0.5)
        snap = trainer.snapshot
        last = lsd_db(snap.reconstruct(data.features, f0), data.features, valid, floor)
        if last <= base + 1.0:
            reached = time.perf_counter() - t0
            break
    stop.set()
    trainer.stop()
    th.join(timeout=2)
    if reached is None:
        print(f"online: not within 1 dB of the baseline after {a.max_seconds:.0f} s "
              f"(LSD {last:.2f} dB, {trainer.step_count} steps; goal <= 60 s)")
    else:
        print(f"online: within 1 dB of the baseline after {reached:.1f} s "
              f"(LSD {last:.2f} vs {base:.2f} dB, {trainer.step_count} steps; goal <= 60 s; "
              f"ratio to goal {reached / 60.0:.2f})")

    ok = subprocess.run(["jack_lsp"], capture_output=True).returncode == 0 \
        if _which("jack_lsp") else False
    if not ok:
        print("live xruns: skipped (no JACK server; start jackd -d dummy, export "
              "JACK_DEFAULT_SERVER)")
        return 0
    from instrument.dissect.live import LiveDissection
    from instrument.engine.stream import Player, resolve_rate

    _, rate = resolve_rate(None, None)
    trainer = OnlineTrainer("pitched", rate, seed=0)
    sess = Dissection(trainer)
    sess.keep_history = False
    live = LiveDissection(sess, FileSource(a.folder, rate, loop=True).hops())
    player = Player(lambda r: live, sample_rate=rate, ahead_blocks=8)
    trainer.start()
    player.start()
    time.sleep(a.live_seconds)
    player.stop()
    trainer.stop()
    st = player.status()
    print(f"live learning on JACK for {a.live_seconds:.0f} s: underflows {st['underflows']} "
          f"(goal 0), PortAudio status flags {st['status_flags']} of {st['callbacks']} "
          f"callbacks, {trainer.step_count} steps, LSD {trainer.snapshot.lsd_db:.2f} dB")
    return 0


def _which(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


if __name__ == "__main__":
    sys.exit(main())
