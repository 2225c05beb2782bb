"""OSC out for the listener: coordinates to any number of UDP targets, off the audio path.

A target is written ``host:port`` (default address ``/inst/listen/xy``, arguments
``x y loudness_db voiced silent time_s``), ``host:port/some/address`` for another address
with the same arguments, or ``wekinator`` (``/wek/inputs x y`` to 127.0.0.1:6448).

:class:`Sender` encodes and sends in its own worker thread, fed by a bounded queue:
``send(coords)`` never blocks; when the queue is full the coordinates are dropped and
counted. Clients may also subscribe at run time: :class:`SubscriptionServer` listens on a
UDP control port (127.0.0.1:57132 by default, a socket of its own, not the instrument's OSC
server) for ``/inst/listen/subscribe [port]`` and ``/inst/listen/unsubscribe [port]``; the
client is then sent the coordinates at its own host and the given port (or the port it
sent from), and is answered ``/inst/listen/subscribed host port``.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from instrument.errors import ConfigError, describe
from instrument.listen.follower import Coord

DEFAULT_ADDRESS = "/inst/listen/xy"
WEKINATOR_ADDRESS = "/wek/inputs"
WEKINATOR_PORT = 6448
CONTROL_PORT = 57132
SUBSCRIBE_ADDRESS = "/inst/listen/subscribe"
UNSUBSCRIBE_ADDRESS = "/inst/listen/unsubscribe"
SUBSCRIBED_ADDRESS = "/inst/listen/subscribed"
QUEUE_ITEMS = 256
MAX_SUBSCRIBERS = 64


@dataclass(frozen=True)
class Target:
    """Where and how to send: ``fields`` is ``"full"`` or ``"xy"`` (x, y only)."""

    host: str
    port: int
    address: str = DEFAULT_ADDRESS
    fields: str = "full"

    def __str__(self) -> str:
        extra = "" if self.fields == "full" else f" ({self.fields})"
        return f"{self.host}:{self.port}{self.address}{extra}"


def wekinator_target(host: str = "127.0.0.1", port: int = WEKINATOR_PORT) -> Target:
    return Target(host, port, WEKINATOR_ADDRESS, "xy")


def _check_port(port: object, where: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(describe(f"{where}: port", port, "an integer 1..65535",
                                   "write the target as host:port, e.g. 127.0.0.1:9000"))
    return port


def parse_target(spec: str | Target, address: str = DEFAULT_ADDRESS) -> Target:
    """``host:port``, ``host:port/address``, ``:port``, or ``wekinator``."""
    if isinstance(spec, Target):
        return spec
    s = str(spec).strip()
    if s.lower() == "wekinator":
        return wekinator_target()
    where = f"listen target {s!r}"
    addr = address
    if "/" in s:
        s, rest = s.split("/", 1)
        addr = "/" + rest
    host, sep, port_s = s.rpartition(":")
    if not sep or not port_s.isdigit():
        raise ConfigError(describe(where, spec, "host:port[/address] or 'wekinator'",
                                   "e.g. 127.0.0.1:9000 or 127.0.0.1:9000/my/xy"))
    if not addr.startswith("/") or " " in addr or any(c in addr for c in "#*?[]{},"):
        raise ConfigError(describe(f"{where}: address", addr,
                                   "an OSC address starting with / without spaces or wildcards",
                                   "e.g. /inst/listen/xy"))
    return Target(host or "127.0.0.1", _check_port(int(port_s), where), addr)


def encode_message(target: Target, c: Coord) -> bytes:
    b = OscMessageBuilder(target.address)
    b.add_arg(float(c.x), "f")
    b.add_arg(float(c.y), "f")
    if target.fields == "full":
        b.add_arg(float(c.loudness_db), "f")
        b.add_arg(int(c.voiced), "i")
        b.add_arg(int(c.silent), "i")
        b.add_arg(float(c.time_s), "f")
    return b.build().dgram


class Sender:
    """Sends each Coord to every target from a worker thread (bounded queue, never blocks)."""

    def __init__(self, targets: Iterable[str | Target] = (), address: str = DEFAULT_ADDRESS,
                 queue_items: int = QUEUE_ITEMS):
        self.address = address
        self._targets: list[Target] = [parse_target(t, address) for t in targets]
        self._lock = threading.Lock()  # guards the target list (worker vs subscribe)
        self._q: queue.Queue[list[Coord] | None] = queue.Queue(maxsize=queue_items)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._thread: threading.Thread | None = None
        self.sent_packets = 0
        self.dropped = 0
        self.send_errors = 0
        self.last_error = ""

    @property
    def targets(self) -> list[Target]:
        with self._lock:
            return list(self._targets)

    def add_target(self, target: str | Target) -> Target:
        t = parse_target(target, self.address)
        with self._lock:
            if t not in self._targets:
                if len(self._targets) >= MAX_SUBSCRIBERS:
                    raise ConfigError(describe("listen: targets", len(self._targets),
                                               f"at most {MAX_SUBSCRIBERS}",
                                               "unsubscribe unused clients"))
                self._targets.append(t)
        return t

    def remove_target(self, target: str | Target) -> bool:
        t = parse_target(target, self.address)
        with self._lock:
            if t in self._targets:
                self._targets.remove(t)
                return True
        return False

    def start(self) -> Sender:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="listen-sender", daemon=True)
            self._thread.start()
        return self

    def send(self, coords: list[Coord]) -> bool:
        """Queue coordinates for sending; False (and counted) when the queue is full."""
        if not coords:
            return True
        try:
            self._q.put_nowait(coords)
            return True
        except queue.Full:
            self.dropped += len(coords)
            return False

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            targets = self.targets
            for c in item:
                for t in targets:
                    try:
                        self._sock.sendto(encode_message(t, c), (t.host, t.port))
                        self.sent_packets += 1
                    except OSError as e:  # unreachable host, refused port: count, go on
                        self.send_errors += 1
                        self.last_error = f"{t}: {e}"

    def stop(self, timeout_s: float = 1.0) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._q.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)
            self._thread = None
        self._sock.close()

    def status(self) -> dict:
        return {"targets": [str(t) for t in self.targets], "sent_packets": self.sent_packets,
                "dropped": self.dropped, "send_errors": self.send_errors,
                "last_error": self.last_error}


class SubscriptionServer:
    """UDP control port: ``/inst/listen/subscribe [port]`` adds the sender's host as a target.

    Bound to 127.0.0.1 by default. Malformed packets are dropped and counted.
    """

    def __init__(self, sender: Sender, host: str = "127.0.0.1", port: int = CONTROL_PORT):
        self.sender = sender
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind((host, _check_port(port, "listen control") if port else 0))
        except OSError as e:
            self._sock.close()
            raise ConfigError(describe(f"listen control port {host}:{port}", str(e),
                                       "a free UDP port", "pick another --control-port")) \
                from None
        self._sock.settimeout(0.2)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bad_packets = 0
        self.subscribed = 0

    def start(self) -> SubscriptionServer:
        self._thread = threading.Thread(target=self._serve, name="listen-subscribe",
                                        daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, (host, src_port) = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.handle(data, host, src_port)

    def handle(self, data: bytes, host: str, src_port: int) -> None:
        try:
            msg = OscMessage(data)
            args = list(msg.params)
        except Exception:  # python-osc raises assorted errors on junk: count and drop
            self.bad_packets += 1
            return
        if msg.address not in (SUBSCRIBE_ADDRESS, UNSUBSCRIBE_ADDRESS):
            self.bad_packets += 1
            return
        port = src_port
        if args:
            a = args[0]
            if isinstance(a, bool) or not isinstance(a, int | float) or a != int(a) \
                    or not 1 <= int(a) <= 65535:
                self.bad_packets += 1
                return
            port = int(a)
        target = Target(host, port, self.sender.address)
        if msg.address == UNSUBSCRIBE_ADDRESS:
            self.sender.remove_target(target)
            return
        try:
            self.sender.add_target(target)
        except ConfigError:
            self.bad_packets += 1
            return
        self.subscribed += 1
        b = OscMessageBuilder(SUBSCRIBED_ADDRESS)
        b.add_arg(host, "s")
        b.add_arg(port, "i")
        with contextlib.suppress(OSError):
            self._sock.sendto(b.build().dgram, (host, port))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        self._sock.close()
