"""Live dissection: the Player pulls hops through the session; OSC and the keyboard steer it.

:class:`LiveDissection` looks like an :class:`~instrument.engine.Engine` to the
:class:`~instrument.engine.stream.Player` (``process``, ``hop_samples``, ``status`` …): the
Player's worker thread calls ``process``, which pulls input hops (a file source is paced by the
audio clock itself; a device source is read from its ring) and runs them through the
:class:`Dissection`. The PortAudio callback only copies from the Player's ring; the trainer
runs in its own thread and is never waited for.

OSC (UDP, 127.0.0.1 by default)::

    /inst/dissect/listen s recon|knobs|mix    /inst/dissect/lr f        /inst/dissect/pause i
    /inst/dissect/reset                       /inst/dissect/freeze i    /inst/dissect/cut s NAME
    /inst/notify i   (1: subscribe the sender to /inst/dissect/progress i step f loss f lsd_db)
"""

from __future__ import annotations

import logging
import math
import socket
import sys
import threading
import time

import numpy as np

from instrument.control import oscwire
from instrument.dissect.session import Dissection, cut_now
from instrument.errors import InstrumentError

log = logging.getLogger(__name__)

PREFIX = "/inst/dissect"


class LiveDissection:
    """Engine-shaped wrapper: ``process(frames)`` renders output by pulling input hops."""

    block_hint = 256

    def __init__(self, session: Dissection, hops_iter, device_source=None,
                 hops_per_block: int = 4):
        self.session = session
        self.sample_rate = session.sample_rate
        self.n_hops = int(hops_per_block)
        self.hop_samples = session.hop * self.n_hops  # the Player asks for this much at once
        self._hops = hops_iter
        self._device = device_source
        self._buf = np.zeros(self.hop_samples, np.float32)
        self._pos = self.hop_samples
        self.dropped = 0
        self.xruns = 0
        self.input_short = 0
        self.ended = threading.Event()
        self.latency_samples = self.hop_samples + session.frames.delay_samples

    def _next_hop(self) -> np.ndarray:
        h = self.session.hop
        if self._device is not None:
            d = self._device
            if d._written - d._read < h:
                self.input_short += 1
                return np.zeros(h, np.float32)
        try:
            return next(self._hops)
        except StopIteration:
            self.ended.set()
            return np.zeros(h, np.float32)

    def process(self, frames: int) -> np.ndarray:
        out = np.empty(int(frames), np.float32)
        pos, hop = 0, self.hop_samples
        while pos < frames:
            if self._pos >= hop:
                block = np.concatenate([self._next_hop() for _ in range(self.n_hops)])
                self._buf = self.session.process_block(block)
                self._pos = 0
            n = min(hop - self._pos, frames - pos)
            out[pos:pos + n] = self._buf[self._pos:self._pos + n]
            self._pos += n
            pos += n
        return out

    def status(self) -> dict:
        t = self.session.trainer
        return {"sample_rate": self.sample_rate, "model": "dissect", "xruns": self.xruns,
                "dropped": self.dropped, "step": t.step_count, "loss": t.loss,
                "lsd_db": t.snapshot.lsd_db, "listen": self.session.listen,
                "input_short": self.input_short}

    def send(self, cmd) -> bool:
        """Engine commands (knobs mode): passed to the knob engine."""
        return self.session.knobs_engine().send(cmd)


class LiveControl:
    """The instrument's own controls driving a live dissection's knobs engine.

    The normal OSC server (:class:`instrument.control.osc.OscServer`, ``/inst/latent``,
    ``/inst/note`` …, 127.0.0.1:57130 by default) and a MIDI input (the default patch's
    ``[[midi]]`` map; none, after one log line, when no MIDI backend works) send their commands
    to ``live.send``, i.e. the knobs engine. The engine is created at :meth:`start` and keeps
    running in every listen mode (its output is heard in "knobs"), so what was played while
    listening to "recon" is in place when switching. The dissect controls stay on their own
    port (:class:`DissectOsc`).
    """

    def __init__(self, live: LiveDissection, status=None, host: str = "127.0.0.1",
                 port: int = 57130, midi: bool = True, midi_port: str | None = None):
        self.live = live
        self.host, self.port = host, int(port)
        self.status = status or live.status
        self.use_midi = midi
        self.midi_port = midi_port
        self.osc = None
        self.midi = None

    def start(self) -> LiveControl:
        from instrument.control.midi import MidiInput, MidiMapper
        from instrument.control.osc import OscServer
        from instrument.control.patches import Patch

        self.live.session.knobs_engine()  # exists from now on: commands have a home
        self.osc = OscServer(self.live.send, status=self.status, host=self.host,
                             port=self.port).start()
        self.port = self.osc.port
        if self.use_midi:
            self.midi = MidiInput.try_open(self.live.send, port_name=self.midi_port,
                                           mapper=MidiMapper(Patch.default().midi))
        return self

    @property
    def midi_text(self) -> str:
        if self.midi is not None:
            return f"in: {self.midi.opened_name}"
        return "off (see the line above)" if self.use_midi else "off"

    def stop(self) -> None:
        for part in (self.midi, self.osc):
            if part is None:
                continue
            try:
                part.stop() if hasattr(part, "stop") else part.close()
            except Exception as e:  # keep closing the rest
                log.warning("stopping %s: %s", type(part).__name__, e)


class DissectOsc:
    """A small OSC server for the dissect controls, in the style of ``control.osc``."""

    def __init__(self, session: Dissection, host: str = "127.0.0.1", port: int = 57131,
                 progress_every: int = 1):
        self.session = session
        self.host, self.port = host, int(port)
        self.counters = {"received": 0, "applied": 0, "dropped": 0, "sent": 0}
        self.subscribers: set[tuple[str, int]] = set()
        self.last_error = ""
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self.cut_folders: list[str] = []
        session.trainer.listeners.append(self._on_progress)

    def start(self) -> DissectOsc:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((self.host, self.port))
        except OSError as e:
            s.close()
            raise InstrumentError(f"OSC port {self.host}:{self.port} cannot be bound ({e}); "
                                  "pass --osc-port with a free port") from None
        s.settimeout(0.2)
        self._sock = s
        self.port = s.getsockname()[1]
        self._running = True
        self._thread = threading.Thread(target=self._run, name="dissect-osc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _run(self) -> None:
        while self._running:
            try:
                data, sender = self._sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            self.counters["received"] += 1
            try:
                pkt = oscwire.parse_packet(data)
            except Exception as e:  # oscwire's parse error, or worse: name the packet
                self._fail(sender, "(packet)", str(e))
                continue
            self._dispatch(pkt, sender)

    def _fail(self, sender, address: str, text: str) -> None:
        """Count, log and answer ``/inst/fail <address> <message>`` (as docs/OSC.md)."""
        self.counters["dropped"] += 1
        self.last_error = text
        log.warning("dissect OSC from %s:%s %s: %s", sender[0], sender[1], address, text)
        self._send(oscwire.encode_message("/inst/fail", address, text), sender)

    def _dispatch(self, pkt, sender) -> None:
        """Apply a message, or a bundle's messages now and in order; each refusal is
        answered on its own and the rest still apply."""
        if isinstance(pkt, oscwire.Bundle):
            for el in pkt.elements:
                self._dispatch(el, sender)
            return
        try:
            self._handle(pkt, sender)
        except InstrumentError as e:
            self._fail(sender, pkt.address, str(e))
        except Exception as e:  # never let a packet stop the server
            self._fail(sender, pkt.address, f"internal error {type(e).__name__}: {e}")

    def _handle(self, pkt, sender) -> None:
        a, args, types = pkt.address, pkt.args, pkt.types
        t = self.session.trainer

        def num(i: int = 0) -> float:
            if len(types) <= i or types[i] not in "ifdhTF":
                raise InstrumentError(f"{a}: argument {i + 1} must be a number, got types "
                                      f"',{types}'")
            v = float(args[i])
            if not math.isfinite(v):
                raise InstrumentError(f"{a}: got {v}, allowed a finite number")
            return v

        def text(i: int = 0) -> str:
            if len(types) <= i or types[i] not in "sS":
                raise InstrumentError(f"{a}: argument {i + 1} must be a string, got types "
                                      f"',{types}'")
            return str(args[i])

        if a == PREFIX + "/listen":
            self.session.set_listen(text())
        elif a == PREFIX + "/lr":
            t.set_lr(num())
        elif a == PREFIX + "/pause":
            t.pause(num() != 0 if types else True)
        elif a == PREFIX + "/freeze":
            t.freeze(num() != 0 if types else True)
        elif a == PREFIX + "/reset":
            t.reset()
        elif a == PREFIX + "/cut":
            folder = cut_now(t, text())
            self.cut_folders.append(str(folder))
            self._send(oscwire.encode_message("/inst/done", a, str(folder)), sender)
        elif a == "/inst/notify":
            if not types or num() != 0:
                self.subscribers.add(sender)
            else:
                self.subscribers.discard(sender)
        else:
            raise InstrumentError(f"OSC address {a!r} is not a dissect control; allowed "
                                  f"{PREFIX}/listen|lr|pause|freeze|reset|cut, /inst/notify")
        self.counters["applied"] += 1

    def _send(self, data: bytes, target) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(data, target)
            self.counters["sent"] += 1
        except OSError:
            pass

    def _on_progress(self, p) -> None:  # trainer thread
        if not self.subscribers:
            return
        loss = p.loss if math.isfinite(p.loss) else -1.0
        lsd = p.lsd_db if math.isfinite(p.lsd_db) else -1.0
        msg = oscwire.encode_message(PREFIX + "/progress", int(p.step), float(loss), float(lsd),
                                     types="iff")
        for s in list(self.subscribers):
            self._send(msg, s)


def status_line(live: LiveDissection, player=None) -> str:
    t = live.session.trainer
    state = "frozen" if t.frozen else "paused" if t.paused else "learning"
    xr = player.xruns if player is not None else 0
    return (f"\r[{live.session.listen:5s}] {state:8s} step {t.step_count:6d}  loss "
            f"{t.loss:7.4f}  stream LSD {live.session.recent_lsd_db:6.2f} dB  frames "
            f"{t.frames_seen:7d}  lr {t.lr:.2g}  xruns {xr}   ")


def keyboard_loop(live: LiveDissection, osc: DissectOsc | None, stop: threading.Event,
                  player=None) -> None:
    """r/k/m listen, space pause, 0 reset, f freeze, c cut, q quit; a status line."""
    import select
    import termios
    import tty

    t = live.session.trainer
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        n_cut = 0
        while not stop.is_set() and not live.ended.is_set():
            sys.stderr.write(status_line(live, player))
            sys.stderr.flush()
            r, _, _ = select.select([sys.stdin], [], [], 0.25)
            if not r:
                continue
            ch = sys.stdin.read(1)
            try:
                if ch in "rkm":
                    live.session.set_listen({"r": "recon", "k": "knobs", "m": "mix"}[ch])
                elif ch == " ":
                    t.pause(not t.paused)
                elif ch == "0":
                    t.reset()
                elif ch == "f":
                    t.freeze(not t.frozen)
                elif ch == "c":
                    n_cut += 1
                    folder = cut_now(t, f"dissect-{time.strftime('%H%M%S')}-{n_cut}")
                    sys.stderr.write(f"\ncut -> {folder}\n")
                elif ch == "q":
                    stop.set()
            except InstrumentError as e:
                sys.stderr.write(f"\n{e}\n")
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
        sys.stderr.write("\n")
