"""Parse + dispatch cost per OSC message: our strict server vs python-osc, same run.

Run: /work/venv/bin/python bench/bench_osc.py [--n 20000]

Both sides parse the same datagrams and turn them into the same commands; no sockets are
involved (the server's ``handle_packet`` is called directly), so the figures are CPU cost.
python-osc is the baseline (its parser is lax: see docs/OSC.md for why we do not use it).
"""

from __future__ import annotations

import argparse
import time

from pythonosc.dispatcher import Dispatcher

from instrument.control import commands as C
from instrument.control import oscwire as w
from instrument.control.osc import OscServer

PACKETS: dict[str, tuple[bytes, int]] = {  # name -> (datagram, messages in it)
    "/inst/latent ff": (w.encode_message("/inst/latent", 0.25, 0.75), 1),
    "/inst/note if": (w.encode_message("/inst/note", 60, 0.5), 1),
    "/inst/param/gain_db f": (w.encode_message("/inst/param/gain_db", -6.0), 1),
    "bundle of 4": (w.encode_bundle([w.encode_message("/inst/latent/x", 0.5)] * 4), 4),
}


def python_osc_dispatcher(out: list) -> Dispatcher:
    d = Dispatcher()
    d.map("/inst/latent", lambda a, x, y: out.append(C.SetLatent(float(x), float(y))))
    d.map("/inst/latent/x", lambda a, x: out.append(C.SetLatent(x=float(x))))
    d.map("/inst/note", lambda a, n, v: out.append(C.NoteOn(float(n), float(v))))
    d.map("/inst/param/gain_db", lambda a, v: out.append(C.SetParam("gain_db", float(v))))
    return d


def per_message_us(fn, data: bytes, msgs: int, n: int) -> float:
    for _ in range(min(n, 500)):  # warm up
        fn(data)
    t0 = time.perf_counter()
    for _ in range(n):
        fn(data)
    return (time.perf_counter() - t0) / (n * msgs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="repetitions per packet kind")
    args = ap.parse_args()
    ours_out: list = []
    theirs_out: list = []
    server = OscServer(ours_out.append, port=0)  # not started: no socket, no replies
    disp = python_osc_dispatcher(theirs_out)
    sender = ("127.0.0.1", 9)

    def ours(data: bytes) -> None:
        server.handle_packet(data, sender)
        ours_out.clear()

    def theirs(data: bytes) -> None:
        disp.call_handlers_for_packet(data, sender)
        theirs_out.clear()

    # Same commands from both, so the comparison is like for like.
    for name, (data, _) in PACKETS.items():
        server.handle_packet(data, sender)
        disp.call_handlers_for_packet(data, sender)
        assert ours_out == theirs_out, (name, ours_out, theirs_out)
        ours_out.clear()
        theirs_out.clear()

    print(f"{'packet':24s} {'ours us/msg':>12s} {'python-osc us/msg':>18s} {'ratio':>7s}")
    for name, (data, msgs) in PACKETS.items():
        a = per_message_us(ours, data, msgs, args.n)
        b = per_message_us(theirs, data, msgs, args.n)
        print(f"{name:24s} {a:12.2f} {b:18.2f} {a / b:7.2f}")
    print(f"(ratio < 1: ours is cheaper; {args.n} repetitions each; counters "
          f"{server.counters['applied']} applied, {server.counters['dropped']} dropped)")


if __name__ == "__main__":
    main()
