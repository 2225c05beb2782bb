"""Control latency, OSC packet -> changed output samples, on a JACK server; start-up time.

Needs a running JACK server (``JACK_DEFAULT_SERVER``): the instrument's PortAudio output is
recorded by a PortAudio input in this process through ``jack_connect``. Latency is counted
in recorded samples, from the recorder's sample position when the UDP packet is sent to the
first sample of the note. The baseline, measured in the same run, is the floor of the
system: a bare PortAudio callback that writes a click as soon as a UDP packet arrives (no
engine, no ring). Run: ``python bench/bench_latency.py``.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import sounddevice as sd

from instrument.control import oscwire
from instrument.control.osc import OscServer
from instrument.engine.engine import Engine
from instrument.engine.stream import Player
from instrument.model.modelfile import Decoder

SR = 48000
BLOCK = 256
TRIALS = 25


def _ports() -> list[str]:
    r = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10)
    return [p.strip() for p in r.stdout.splitlines()]


class Recorder:
    def __init__(self):
        self.n = 0
        self.t_last = time.monotonic()
        self.buf = np.zeros(SR * 300, np.float32)
        before = set(_ports())
        self.stream = sd.InputStream(samplerate=SR, channels=1, dtype="float32",
                                     blocksize=BLOCK, callback=self._cb)
        self.stream.start()
        self.port = next(p for p in _ports() if p not in before and ":in" in p)
        for p in _ports():
            if p.startswith("system:capture"):
                subprocess.run(["jack_disconnect", p, self.port], capture_output=True)

    def _cb(self, indata, frames, t, status):
        if self.n + frames <= len(self.buf):
            self.buf[self.n:self.n + frames] = indata[:, 0]
        self.n += frames
        self.t_last = time.monotonic()

    def now_index(self) -> float:
        return self.n + (time.monotonic() - self.t_last) * SR

    def onset_after(self, idx: float, thresh: float = 1e-3, wait_s: float = 0.2) -> float:
        time.sleep(wait_s)
        seg = np.abs(self.buf[int(idx):self.n])
        hit = np.flatnonzero(seg > thresh)
        return float(hit[0]) if len(hit) else float("nan")


def _connect(before: set[str], rec: Recorder) -> None:
    outs = [p for p in _ports() if p not in before and ":out" in p]
    for p in outs[:1]:
        subprocess.run(["jack_connect", p, rec.port], check=True)


def measure_floor(rec: Recorder) -> list[float]:
    """A UDP packet sets a flag; the next callback writes a click. The system's floor."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    flag = [0]

    def rx():
        while True:
            try:
                sock.recv(1024)
            except OSError:
                return
            flag[0] = 1

    def cb(outdata, frames, t, status):
        outdata.fill(0.0)
        if flag[0]:
            outdata[0, 0] = 1.0
            flag[0] = 0

    threading.Thread(target=rx, daemon=True).start()
    before = set(_ports())
    out = sd.OutputStream(samplerate=SR, channels=1, blocksize=BLOCK, callback=cb)
    out.start()
    _connect(before, rec)
    time.sleep(0.5)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lat = []
    for _ in range(TRIALS):
        idx = rec.now_index()
        tx.sendto(b"x", sock.getsockname())
        lat.append(rec.onset_after(idx, 0.5))
    out.stop()
    out.close()
    sock.close()
    return lat


def measure_engine(rec: Recorder, ahead_blocks: int) -> tuple[list[float], tuple[int, int]]:
    dec = Decoder("default")
    before = set(_ports())
    player = Player(lambda sr: Engine(dec, sr, block_hint=BLOCK), sample_rate=SR,
                    blocksize=BLOCK, ahead_blocks=ahead_blocks, report_s=60)
    eng = player.engine
    server = OscServer(eng.send, port=0).start()
    for cmd in ("param attack_ms 0.5", "param release_ms 1", "param gain_db 0"):
        from instrument.control.commands import parse
        eng.send(parse(cmd))
    player.start()
    _connect(before, rec)
    time.sleep(0.5)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = ("127.0.0.1", server.port)
    lat = []
    for _ in range(TRIALS):
        idx = rec.now_index()
        tx.sendto(oscwire.encode_message("/inst/note", 69, 1.0), dest)
        lat.append(rec.onset_after(idx))
        tx.sendto(oscwire.encode_message("/inst/note/off", 69), dest)
        time.sleep(0.1)
    xr = (player.ring.underflows, player.status_flags)
    player.stop()
    server.stop()
    return lat, xr


def startup_s(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def _ms(lat: list[float]) -> tuple[float, float, float]:
    ok = [x / SR * 1000 for x in lat if np.isfinite(x)]
    return statistics.median(ok), float(np.percentile(ok, 90)), max(ok)


def main() -> None:
    rec = Recorder()
    floor = _ms(measure_floor(rec))
    print(f"JACK {SR} Hz, period {BLOCK}; {TRIALS} trials each; latency median / p90 / max ms")
    print(f"  baseline: bare callback, click on UDP receipt   {floor[0]:6.1f} {floor[1]:6.1f} "
          f"{floor[2]:6.1f}")
    for ahead in (1, 2, 3):
        lat, xr = measure_engine(rec, ahead)
        m = _ms(lat)
        print(f"  engine, OSC note, ring {ahead} block(s) ahead        {m[0]:6.1f} {m[1]:6.1f} "
              f"{m[2]:6.1f}   (+{m[0] - floor[0]:.1f} ms; ring underflows {xr[0]}, "
              f"PortAudio status flags {xr[1]})")
    rec.stream.stop()
    base = min(startup_s(["-c", "pass"]) for _ in range(3))
    info = min(startup_s(["-m", "instrument.cli", "info"]) for _ in range(3))
    torch_s = min(startup_s(["-c", "import torch"]) for _ in range(2))
    print(f"start-up: python {base:.2f} s; 'instrument info' (imports + model load + self-check)"
          f" {info:.2f} s ({info / base:.1f}x); 'import torch' alone {torch_s:.2f} s")


if __name__ == "__main__":
    main()
