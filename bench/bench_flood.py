"""Does the audio keep flowing under an OSC flood? Same-run baseline vs flood.

Run (needs a JACK server; the dummy one is fine):
    JACK_DEFAULT_SERVER=NAME /work/venv/bin/python bench/bench_flood.py [--seconds 10]

The live instrument (``app.Session``: engine, Player on JACK, OSC server, patch loader) plays
a held C major chord. Phase 1 (baseline): nothing else happens for ``--seconds``. Phase 2
(flood): a second *process* (so it does not share our GIL) sends ``--rate`` datagrams/s for
``--seconds`` to the OSC port: mostly ``/inst/latent ff``, plus random garbage, truncated
``,ff`` messages, NaN/1e30 latents, wide patterns, 1,900-message bundles, nested bundles,
far-future bundles and patch loads (a good patch, a missing one, a broken one, a 2 MB one).
Printed per phase: ring underflows, PortAudio status flags (device xruns), callbacks, the
engine's dropped commands, the OSC counters, and the replies the flooder got back. At the
end a note-off for the chord must leave no voice sounding (a dropped note-off = stuck note).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from instrument.control import oscwire as w  # noqa: E402

CHORD = (60.0, 64.0, 67.0)


def flood(port: int, seconds: float, rate: int, tmp: str) -> None:
    """The flooder (runs in its own process): the reviewer's mix at ``rate`` datagrams/s."""
    rng = random.Random(1)
    dst = ("127.0.0.1", port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    latents = [w.encode_message("/inst/latent", rng.random(), rng.random()) for _ in range(1000)]
    big = w.encode_bundle([w.encode_message("/inst/latent", rng.random(), rng.random())
                           for _ in range(1900)])
    nested = w.encode_bundle([w.encode_bundle([w.encode_bundle(
        [w.encode_message("/inst/latent/x", 0.3)])] * 150)] * 10)
    far = w.encode_bundle([w.encode_message("/inst/latent/x", 0.9)],
                          w.unix_to_timetag(time.time() + 30 * 86400))
    nan = w.encode_message("/inst/latent", float("nan"), 1e30)
    pattern = w.encode_message("/inst/*/{a,b,c}/[!x]*" * 20, 0.5)
    patches = [w.encode_message("/inst/patch/load", p) for p in (
        str(ROOT / "patches" / "default.toml"), "/nonexistent/patch.toml",
        f"{tmp}/bad.toml", f"{tmp}/big.toml", "\u00e9" * 10)]
    sent = errors = replies = fails = 0
    k = 0
    t0 = time.perf_counter()
    while (el := time.perf_counter() - t0) < seconds:
        for _ in range(100):
            k += 1
            if k % 1000 == 0:
                data = big
            elif k % 997 == 0:
                data = nested
            elif k % 50 == 0:
                data = os.urandom(rng.randint(0, 1500))
            elif k % 53 == 0:
                data = b"/inst/latent\0\0\0\0,ff\0" + os.urandom(rng.randint(0, 7))
            elif k % 2003 == 0:
                data = rng.choice(patches)
            elif k % 5001 == 0:
                data = far
            elif k % 61 == 0:
                data = nan
            elif k % 67 == 0:
                data = pattern
            else:
                data = latents[k % 1000]
            try:
                sock.sendto(data, dst)
                sent += 1
            except OSError:
                errors += 1
        while True:  # count (and so drain) what the server answers
            try:
                r = sock.recv(65536)
            except OSError:
                break
            replies += 1
            fails += r.startswith(b"/inst/fail\0")
        ahead = sent / rate - el
        if ahead > 0:
            time.sleep(ahead)
    dt = time.perf_counter() - t0
    print(f"flooder: sent {sent} datagrams in {dt:.1f} s ({sent / dt:.0f}/s), send errors "
          f"{errors}, replies received {replies} ({fails} /inst/fail)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--rate", type=int, default=20000, help="flood datagrams per second")
    ap.add_argument("--port", type=int, default=0, help="OSC port (0 = any free)")
    ap.add_argument("--flood", nargs=2, metavar=("PORT", "TMP"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.flood:
        flood(int(a.flood[0]), a.seconds, a.rate, a.flood[1])
        return 0
    if not os.environ.get("JACK_DEFAULT_SERVER"):
        print("bench_flood: skipped: no JACK server (start one and export JACK_DEFAULT_SERVER)")
        return 0
    from instrument.app import Session
    from instrument.control import commands as C
    from instrument.errors import InstrumentError

    ns = argparse.Namespace(patch=None, model=None, device=None, rate=None, block=256,
                            ahead_blocks=1, osc_host="127.0.0.1", osc_port=a.port, no_midi=True,
                            midi=None, follow=None, follow_latent_only=False)
    try:
        s = Session(ns).start()
    except InstrumentError as e:
        print(f"bench_flood: skipped: {e}")
        return 0
    tmp = tempfile.mkdtemp(prefix="bench_flood_")
    Path(tmp, "bad.toml").write_text('format = "instrument-patch/1"\n[[midi]\ncc=\n')
    Path(tmp, "big.toml").write_text('format = "instrument-patch/1"\n' + "# x\n" * 500_000)
    try:
        for n in CHORD:
            s.engine.send(C.NoteOn(n, 0.8))
        time.sleep(1.0)

        def snap() -> dict:
            st = s.player.status()
            return {"underflows": st["underflows"], "device xruns": st["status_flags"],
                    "callbacks": st["callbacks"], "engine dropped": st["dropped"],
                    "callback errors": st["callback_errors"],
                    **{f"osc.{k}": v for k, v in s.osc.counters.items()}}

        rows = []
        for phase in ("baseline", "flood"):
            before = snap()
            cpu0 = time.process_time()
            proc = None
            if phase == "flood":
                proc = subprocess.Popen([sys.executable, __file__, "--seconds", str(a.seconds),
                                         "--rate", str(a.rate), "--flood", str(s.osc.port), tmp])
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < a.seconds:
                time.sleep(0.1)
            if proc is not None:
                proc.wait(timeout=a.seconds + 30)
            time.sleep(1.0)  # let the server work off what the kernel still holds
            after = snap()
            row = {k: after[k] - before[k] for k in after}
            row["instrument CPU ms/s"] = round(1000 * (time.process_time() - cpu0)
                                               / (a.seconds + 1.0))
            rows.append((phase, row))
        for n in CHORD:
            s.engine.send(C.NoteOff(n))
        time.sleep(1.5)  # release_ms 250 and more
        voices = s.player.status()["voices"]
    finally:
        s.stop()
    print(f"\nbench_flood: {a.seconds:g} s per phase, flood {a.rate} datagrams/s, model "
          f"{s.decoder.name}, block 256, ring 1 block ahead, {os.cpu_count()} CPUs")
    keys = [k for k in rows[0][1] if k.startswith(("underflows", "device", "callbacks",
                                                    "engine", "callback", "instrument"))
            or rows[1][1][k] or rows[0][1][k]]
    print(f"{'':28s}" + "".join(f"{p:>12s}" for p, _ in rows))
    for k in keys:
        print(f"{k:28s}" + "".join(f"{r[k]:>12d}" for _, r in rows))
    print(f"voices sounding 1.5 s after the chord's note-offs: {voices} (0 = no stuck note)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
