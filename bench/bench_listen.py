"""Benchmark the compressor path: onset -> OSC packet latency, and encode throughput.

    python bench/bench_listen.py [--model default] [--seconds 8] [--onsets 12]

1. Latency (goal <= 25 ms at 48 kHz): a Listener plays a signal of tone bursts in real time
   (paced by the clock in 256-frame blocks, as a device delivers them) and sends to a real
   UDP socket here; for each burst, latency = arrival of the first non-silent packet minus
   the time the burst's first sample was "captured". With a JACK server reachable
   (JACK_DEFAULT_SERVER), the same is measured through a real PortAudio input on JACK, fed
   by a second PortAudio output stream connected with jack_connect.
2. Throughput: the streaming Follower (256-frame blocks) as a realtime factor, against the
   offline batch path (analyze the whole signal, encode all frames at once) in the same run.

Without models/default a model with random weights is made (same shapes, same cost).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from instrument.listen.follower import Follower  # noqa: E402
from instrument.model.modelfile import MLP, Encoder, resolve, write  # noqa: E402

SR = 48000
os.environ.setdefault("JACK_NO_START_SERVER", "1")  # probe JACK, never auto-start a server


def random_model(folder: Path) -> Path:
    from instrument.corpus.features import N_HARMONICS, N_NOISE_BANDS, noise_band_edges_hz

    rng = np.random.default_rng(0)
    nf = N_HARMONICS + N_NOISE_BANDS

    def mlp(sizes: list[int], acts: list[str]) -> MLP:
        return MLP([rng.normal(0, 1 / math.sqrt(a), (b, a)).astype(np.float32)
                    for a, b in zip(sizes[:-1], sizes[1:], strict=True)],
                   [np.zeros(b, np.float32) for b in sizes[1:]], acts)

    meta = {"mode": "pitched", "sample_rate": SR, "hop_samples": 256, "n_fft": 1024,
            "window_samples": 2048, "n_harmonics": N_HARMONICS,
            "noise_band_edges_hz": noise_band_edges_hz(SR, N_NOISE_BANDS).tolist(),
            "latency_samples": {"decoder": 256, "encoder": 1024},
            "latent": {"raw_lo": [-1.5, -1.5], "raw_hi": [1.5, 1.5], "corpus_points": [],
                       "corpus_labels": []},
            "features": {"mean": [-4.0] * nf, "std": [2.0] * nf}}
    write(folder, meta, mlp([3, 256, 256, nf], ["silu", "silu", "linear"]),
          mlp([nf + 1, 256, 256, 2], ["silu", "silu", "linear"]))
    return folder


def bursts(n_onsets: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Tone bursts (0.15 s) separated by silence (0.25 s + random), and their onsets."""
    t = np.arange(int(0.15 * SR)) / SR
    parts, onsets, pos = [np.zeros(int(0.3 * SR), np.float32)], [], int(0.3 * SR)
    for _ in range(n_onsets):
        f0 = float(rng.uniform(150, 600))
        burst = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * 0.2
        onsets.append(pos)
        parts.append(burst.astype(np.float32))
        gap = int((0.25 + rng.uniform(0, 0.05)) * SR)
        parts.append(np.zeros(gap, np.float32))
        pos += len(burst) + gap
    return np.concatenate(parts), onsets


def receive_onsets(sock: socket.socket, until_s: float) -> list[float]:
    """Monotonic arrival times of packets that switch from silent to sounding."""
    from pythonosc.osc_message import OscMessage

    times, was_silent = [], True
    while time.monotonic() < until_s:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        now = time.monotonic()
        silent = bool(OscMessage(data).params[4])
        if was_silent and not silent:
            times.append(now)
        was_silent = silent
    return times


def match(onset_times: list[float], arrivals: list[float]) -> list[float]:
    """For each onset, the first arrival after it (in ms); onsets not heard are skipped."""
    out = []
    for t in onset_times:
        later = [a for a in arrivals if a >= t - 0.001]
        if later and later[0] - t < 0.2:
            out.append(1000.0 * (later[0] - t))
    return out


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.05)
    return s


def latency_file(model: Path, sig: np.ndarray, onsets: list[int], tmp: Path) -> list[float]:
    from instrument.listen.live import Listener

    wav = tmp / "bursts.wav"
    sf.write(str(wav), sig, SR, subtype="FLOAT")
    rx = udp()
    lst = Listener(model, file=wav, targets=[f"127.0.0.1:{rx.getsockname()[1]}"], log=None)
    lst.start()
    arrivals = receive_onsets(rx, time.monotonic() + len(sig) / SR + 0.5)
    lst.stop()
    rx.close()
    return match([lst.file_t0 + (s + 1) / SR for s in onsets], arrivals)


def latency_jack(model: Path, sig: np.ndarray, onsets: list[int]) -> list[float] | None:
    if shutil.which("jack_lsp") is None or subprocess.run(
            ["jack_lsp"], capture_output=True, timeout=5).returncode != 0:
        return None
    import sounddevice as sd

    from instrument.listen.live import Listener

    def ports() -> set[str]:
        return set(subprocess.run(["jack_lsp"], capture_output=True, text=True,
                                  timeout=5).stdout.split())

    onset_set = set(onsets)
    produced: list[float] = []  # monotonic time each onset sample was written
    state = {"pos": -1}

    def play(outdata, frames, time_info, status):
        i = state["pos"]
        if i < 0:
            outdata.fill(0)
            return
        chunk = sig[i:i + frames]
        outdata[:len(chunk), 0] = chunk
        outdata[len(chunk):, 0] = 0
        now = time.monotonic()
        for s in range(i, i + frames):
            if s in onset_set:
                produced.append(now + (s - i) / SR)
        state["pos"] = i + frames

    rx = udp()
    before = ports()
    lst = Listener(model, channels=1, targets=[f"127.0.0.1:{rx.getsockname()[1]}"], log=None)
    lst.start()
    inp = sorted(p for p in ports() - before if ":in" in p)
    before = ports()
    out = sd.OutputStream(samplerate=SR, channels=1, dtype="float32", callback=play,
                          latency="low")
    out.start()
    outp = sorted(p for p in ports() - before if ":out" in p)
    subprocess.run(["jack_connect", outp[0], inp[0]], check=True, timeout=5)
    state["pos"] = 0
    arrivals = receive_onsets(rx, time.monotonic() + len(sig) / SR + 0.5)
    out.stop()
    out.close()
    lst.stop()
    rx.close()
    return match(produced, arrivals)


def throughput(model: Path, seconds: float) -> tuple[float, float]:
    from instrument.corpus.features import analyze

    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 220 * 2 ** (np.sin(2 * np.pi * 0.3 * t))
    x = (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / SR) + 0.01 * rng.standard_normal(len(t)))
    x = x.astype(np.float32)
    enc = Encoder(model)
    t0 = time.perf_counter()
    fr = analyze(x, SR, enc.mode)
    enc.encode(fr.features, fr.f0_hz if enc.pitched else None)
    batch_s = time.perf_counter() - t0
    f = Follower(enc, SR)
    t0 = time.perf_counter()
    for i in range(0, len(x), 256):
        f.process(x[i:i + 256])
    stream_s = time.perf_counter() - t0
    return seconds / stream_s, seconds / batch_s


def stats(ms: list[float]) -> str:
    a = np.asarray(ms)
    return (f"n={len(a)} median {np.median(a):.1f} ms, p90 {np.percentile(a, 90):.1f} ms, "
            f"max {a.max():.1f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--seconds", type=float, default=8.0, help="throughput signal length")
    ap.add_argument("--onsets", type=int, default=12)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        try:
            model = resolve(a.model)
        except Exception:
            print(f"model {a.model!r} not found: using random weights of the same shapes")
            model = random_model(tmp / "random")
        f = Follower(model, SR)
        print(f"model {model}: analysis lookahead {f.analysis_latency_samples} samples "
              f"({f.latency_ms:.1f} ms after a frame's centre), hop {f.hop_samples}")
        sig, onsets = bursts(a.onsets, np.random.default_rng(0))
        ms = latency_file(model, sig, onsets, tmp)
        print(f"latency onset -> UDP packet, clock-paced 256-frame blocks: {stats(ms)}"
              if ms else "latency (file): no onsets heard")
        jk = latency_jack(model, sig, onsets)
        if jk is None:
            print("latency through JACK: skipped (no JACK server reachable)")
        elif jk:
            print(f"latency onset -> UDP packet through JACK + PortAudio: {stats(jk)}")
        goal = 25.0
        worst = max((ms or [math.inf]) + (jk or []))
        print(f"goal <= {goal:.0f} ms: {'met' if worst <= goal else 'NOT met'} "
              f"(worst {worst:.1f} ms)")
        rt_stream, rt_batch = throughput(model, a.seconds)
        print(f"throughput: streaming Follower {rt_stream:.1f}x realtime; offline batch "
              f"baseline {rt_batch:.1f}x; streaming/batch = {rt_stream / rt_batch:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
