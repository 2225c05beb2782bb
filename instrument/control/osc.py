"""OSC server: UDP datagrams -> :mod:`instrument.control.commands` -> ``send(cmd)``.

One receiver thread reads a UDP socket (127.0.0.1:57130 by default), parses each datagram
with the strict :mod:`instrument.control.oscwire` parser, and turns every message under
``/inst`` into commands, in arrival order. Bundles dated in the near future are held in a
heap and applied by the same thread at their time; nothing ever sleeps past the next packet.
Every refused message is counted by reason, logged (rate-limited) with sender, address,
problem and fix, and answered with ``/inst/fail <address> <message>`` (at most
``fail_replies_per_s`` per sender; the rest are counted in ``fail_suppressed``). docs/OSC.md
lists every address.

Flood safety (the audio worker needs the GIL): a datagram applies at most ``max_messages``
messages (a bigger bundle is cut by its element sizes before it is parsed; one ``/inst/fail``
for the rest), ``/inst/latent ,ff`` and ``/inst/latent/x|y ,f`` take a fast path that skips
the general parser, and the receiver yields the GIL after every ``YIELD_EVERY`` datagrams
of a burst. A patch load runs wherever ``load_patch`` puts it: when it returns a
:class:`concurrent.futures.Future`, the receiver keeps serving and answers
``/inst/done``/``/inst/fail`` to the sender when the future completes.
"""

from __future__ import annotations

import heapq
import logging
import math
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from instrument import params
from instrument.control import commands as C
from instrument.control import oscwire
from instrument.control.oscwire import Message
from instrument.control.patches import OSC_TARGETS, target_command
from instrument.errors import ControlError, InstrumentError, describe

log = logging.getLogger(__name__)

DEFAULT_PORT = 57130
RECV_BYTES = 65536
RCVBUF_BYTES = 4 << 20  # asked for (the kernel caps it at net.core.rmem_max); >= 64 KiB needed
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40 if hasattr(socket, "CMSG_SPACE") else None)
PREFIX = "/inst"
MAX_MESSAGES = 256  # per datagram; the rest of a bigger bundle is refused
FAIL_REPLIES_PER_S = 20.0  # /inst/fail replies per sender (burst of as many)
YIELD_EVERY = 32  # datagrams handled back to back before the receiver yields the GIL
LOAD_POLL_S = 0.01  # how often a pending patch load is checked for completion

Sender = tuple[str, int]

#: Reasons a message (or packet) is dropped; each is a key of :attr:`OscServer.counters`.
DROP_REASONS = ("malformed", "non_finite", "nil", "no_args", "bad_type", "arg_count",
                "out_of_range", "unknown_address", "send_failed", "internal_error",
                "too_many", "busy")
_OTHER_COUNTERS = ("received", "messages", "applied", "dropped", "nil_args", "scheduled",
                   "late", "far_future", "replies", "reply_errors", "overflow",
                   "fail_suppressed")

_SIZE = struct.Struct(">i")
_FF = struct.Struct(">ff")
_F = struct.Struct(">f")
# 20-byte heads (padded address + type tags) of the hot messages, read without the parser
_FAST_LATENT = b"/inst/latent\0\0\0\0,ff\0"
_FAST_AXIS = {b"/inst/latent/x\0\0,f\0\0": "x", b"/inst/latent/y\0\0,f\0\0": "y"}


class Busy(ControlError):
    """A ``load_patch`` callable raises this when a load is still running (reason ``busy``)."""


def _count_messages(data: bytes, start: int, end: int, limit: int, depth: int = 0) -> int | None:
    """Messages in a packet from the bundles' element sizes alone (no parsing), counted up
    to ``limit + 1`` (then the walk stops); None when the sizes read do not add up (the
    strict parser then says what is wrong)."""
    tag = oscwire.BUNDLE_TAG
    if not data.startswith(tag, start):
        return 1
    if depth >= oscwire.MAX_BUNDLE_DEPTH or end - start < 16:
        return None
    unpack = _SIZE.unpack_from
    pos, n = start + 16, 0
    while pos < end and n <= limit:
        if pos + 4 > end:
            return None
        size = unpack(data, pos)[0]
        pos += 4
        if size <= 0 or size % 4 or pos + size > end:
            return None
        if data.startswith(tag, pos):
            k = _count_messages(data, pos, pos + size, limit - n, depth + 1)
            if k is None:
                return None
            n += k
        else:
            n += 1
        pos += size
    return n


_RELEASE_HINTS = (b"/inst/note", b"/inst/alloff", b"/inst/gate")
_RELEASE_HEADS = (b"/inst/note/off\0", b"/inst/alloff\0", b"/inst/note\0", b"/inst/gate\0")


def _is_release(data: bytes, start: int, end: int) -> bool:
    """Is the message at ``data[start:end]`` a note-off, all-off or gate-off (literal)?"""
    if not data.startswith(_RELEASE_HEADS, start, end):
        return False
    try:
        m = oscwire.parse_packet(data[start:end])
    except oscwire.OscError:
        return False
    assert isinstance(m, Message)
    if m.address in (PREFIX + "/note/off", PREFIX + "/alloff"):
        return True
    i = 1 if m.address == PREFIX + "/note" else 0
    if len(m.types) <= i:
        return False
    t, v = m.types[i], m.args[i]
    return t == "F" or (t in "ifdh" and v == 0)


def _cut_bundle(data: bytes, start: int, end: int, budget: int,
                releases: bool) -> tuple[bytearray, int, int]:
    """The bundle at ``data[start:end]`` keeping only its first ``budget`` messages (depth
    first, nesting and timetags kept), plus with ``releases`` every later note-off, all-off
    and gate-off (so a refused tail never leaves a note stuck). Returns (bundle, messages
    kept within the budget, releases kept after it). For sizes :func:`_count_messages`
    read; the rest of the walk stops at the first size that does not add up."""
    out = bytearray(data[start:start + 16])
    pos, used, kept = start + 16, 0, 0
    while pos + 4 <= end and (used < budget or releases):
        size = _SIZE.unpack_from(data, pos)[0]
        el = pos + 4
        if size <= 0 or size % 4 or el + size > end:
            break
        if data.startswith(oscwire.BUNDLE_TAG, el):
            inner, k, r = _cut_bundle(data, el, el + size, budget - used, releases)
            if k or r or used < budget:
                out += _SIZE.pack(len(inner)) + inner
            used, kept = used + k, kept + r
        elif used < budget:
            out += data[pos:el + size]
            used += 1
        elif _is_release(data, el, el + size):
            out += data[pos:el + size]
            kept += 1
        pos = el + size
    return out, used, kept

ALIAS_TARGETS = ("latent.x", "latent.y", "param.<name>", "note", "velocity", "note.<n>", "bend",
                 "gate", "freeze", "alloff", "'' (skip the argument)")


class _Refused(Exception):
    """A message is refused: ``reason`` is a counter key, ``text`` the explanation."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason, self.text = reason, text


# Slot kinds of a handler's signature. A literal address coerces arguments (a float may
# switch a boolean); a wildcard pattern only reaches handlers whose slots the type tags
# fit strictly (see _fits).
NUM, BOOL, STR = "num", "bool", "str"
_STRICT_TAGS = {NUM: frozenset("ifdhN"), BOOL: frozenset("ihTF"), STR: frozenset("sS")}


@dataclass(frozen=True)
class _Route:
    address: str
    slots: tuple[str, ...]  # argument kinds, in order
    min_args: int
    handler: Callable[[Message, Sender], list[C.Command]]
    any_args: bool = False  # zero-argument verbs ignore extra arguments on a literal address


@dataclass(frozen=True)
class Alias:
    address: str
    targets: tuple[str, ...]
    invert: tuple[bool, ...]
    swap: bool


def _fits(route: _Route, msg: Message) -> bool:
    """Strict signature check used for wildcard patterns."""
    n = len(msg.types)
    if not route.min_args <= n <= len(route.slots):
        return False
    return all(t in _STRICT_TAGS[k] for t, k in zip(msg.types, route.slots, strict=False))


def _sender_text(sender: Sender) -> str:
    return f"{sender[0]}:{sender[1]}"


def _osc_value(v: object) -> oscwire.Arg:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v if -2**63 <= v < 2**63 else float(v)
    if isinstance(v, float | str):
        return v
    if v is None:
        return "none"
    return str(v)


def _flatten(d: dict, prefix: str = "") -> Iterable[tuple[str, object]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        elif isinstance(v, list | tuple) and all(isinstance(e, int | float) for e in v):
            # e.g. latent [x, y] -> "latent.x" x "latent.y" y (numbers, not a string)
            names = "xy" if len(v) == 2 else [str(i) for i in range(len(v))]
            for n, e in zip(names, v, strict=False):
                yield f"{key}.{n}", e
        else:
            yield key, v


class OscServer:
    """Receive OSC on UDP and pass commands to ``send``.

    ``send(cmd)`` receives each command (e.g. ``Engine.send``); returning ``False`` counts a
    ``send_failed`` drop. ``status()`` returns a dict for ``/inst/status`` (the OSC counters
    are added as ``osc.<name>``). ``load_patch(path)`` runs for ``/inst/patch/load`` on the
    receiver thread, so it should only start the work: returning a
    :class:`concurrent.futures.Future` makes the reply wait for it (``/inst/done`` when it
    completes, ``/inst/fail`` with the message of the InstrumentError or OSError it raised);
    returning anything else replies ``/inst/done`` at once; raising :class:`Busy` (a load is
    still running) or another InstrumentError replies ``/inst/fail`` at once. When it is
    ``None`` a :class:`~instrument.control.commands.LoadPatch` command is sent instead.
    ``horizon_s`` bounds how far ahead a bundle is held; later ones apply now with a warning.
    ``max_messages`` caps the messages applied per datagram; ``fail_replies_per_s`` caps the
    ``/inst/fail`` replies per sender (the refusals are still counted).
    """

    def __init__(self, send: Callable[[C.Command], object],
                 status: Callable[[], dict] | None = None,
                 load_patch: Callable[[str], object] | None = None, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, horizon_s: float = 2.0, log_interval_s: float = 1.0,
                 poll_s: float = 0.25, max_messages: int = MAX_MESSAGES,
                 fail_replies_per_s: float = FAIL_REPLIES_PER_S) -> None:
        if not (math.isfinite(horizon_s) and horizon_s >= 0):
            raise ControlError(describe("OSC horizon_s", horizon_s, ">= 0 seconds",
                                        "pass e.g. horizon_s=2.0"))
        self._send, self._status, self._load_patch = send, status, load_patch
        self.host, self._port = host, port
        self.horizon_s, self.log_interval_s, self._poll_s = horizon_s, log_interval_s, poll_s
        self._counts: dict[str, int] = {k: 0 for k in (*_OTHER_COUNTERS, *DROP_REASONS)}
        self._sock: socket.socket | None = None
        self._ovfl = False
        self._thread: threading.Thread | None = None
        self._running = False
        self._heap: list[tuple[float, int, Message, Sender]] = []
        self._seq = 0
        self._aliases: dict[str, Alias] = {}  # replaced whole on change (copy on write)
        self._subs: set[Sender] = set()
        self._subs_lock = threading.Lock()
        self._log_last: dict[str, tuple[float, int]] = {}
        if not (isinstance(max_messages, int) and max_messages >= 1):
            raise ControlError(describe("OSC max_messages", max_messages, "an int >= 1",
                                        f"pass e.g. max_messages={MAX_MESSAGES}"))
        if not (math.isfinite(fail_replies_per_s) and fail_replies_per_s > 0):
            raise ControlError(describe("OSC fail_replies_per_s", fail_replies_per_s, "> 0",
                                        f"pass e.g. fail_replies_per_s={FAIL_REPLIES_PER_S:g}"))
        self.max_messages, self.fail_replies_per_s = max_messages, float(fail_replies_per_s)
        self._fail_bucket: dict[Sender, tuple[float, float]] = {}  # tokens, time (monotonic)
        self._loads: list[tuple[Future, Sender, str]] = []  # patch loads awaiting their reply
        self._routes = self._build_routes()

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The bound UDP port (after :meth:`start`; ``port=0`` picks a free one)."""
        return self._port

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot: received, messages, applied, dropped (total) and one key per reason."""
        return dict(self._counts)

    def start(self) -> OscServer:
        """Bind the socket and start the receiver thread; logs the bound host:port."""
        if self._running:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            sock.bind((self.host, self._port))
        except OSError as e:
            sock.close()
            raise ControlError(describe(f"OSC port {self.host}:{self._port}", str(e),
                                        "a free UDP port", "stop the other program using it or "
                                        "pick another port (0 = any free port)")) from None
        self._ovfl = False
        if SO_RXQ_OVFL is not None:
            try:  # Linux: the kernel reports datagrams it dropped on a full buffer
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
                self._ovfl = True
            except OSError:
                pass
        rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if rcvbuf < 65536:
            log.warning("OSC receive buffer is %d bytes (< 64 KiB); large bursts may be lost; "
                        "raise net.core.rmem_max", rcvbuf)
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"osc-{self._port}", daemon=True)
        self._thread.start()
        log.info("OSC listening on %s:%d (namespace %s, receive buffer %d bytes)",
                 self.host, self._port, PREFIX, rcvbuf)
        return self

    def stop(self) -> None:
        """Stop the receiver thread and close the socket; held bundles are discarded."""
        if not self._running:
            return
        self._running = False
        try:  # wake the receiver at once
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"", (self.host if self.host != "0.0.0.0" else "127.0.0.1", self._port))
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._sock is not None:
            self._sock.close()
        self._sock, self._thread = None, None
        self._heap.clear()
        self._loads.clear()

    def __enter__(self) -> OscServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        anc_bytes = socket.CMSG_SPACE(4) if self._ovfl else 0
        kernel_drops = 0
        burst = 0  # datagrams handled since the socket last had to wait
        # non-blocking reads, a poll only when the socket is empty: a burst costs one
        # system call per datagram, not a poll + a read
        sock.setblocking(False)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while self._running:
            data: bytes | None = None
            try:
                data, anc, flags, sender = sock.recvmsg(RECV_BYTES, anc_bytes)
            except BlockingIOError:
                burst = 0
                timeout = self._poll_s if not self._loads else min(self._poll_s, LOAD_POLL_S)
                if self._heap:
                    timeout = max(0.0, min(timeout, self._heap[0][0] - time.time()))
                poller.poll(math.ceil(timeout * 1000))
            except OSError as e:
                if not self._running:
                    break
                self._rate_log(logging.WARNING, "recv", f"OSC receive error: {e}")
                continue
            if not self._running:
                break
            if data is not None:
                for level, kind, raw in anc:
                    if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(raw) >= 4:
                        total = int.from_bytes(raw[:4], sys.byteorder)
                        if total > kernel_drops:
                            self._counts["overflow"] += total - kernel_drops
                            self._rate_log(logging.WARNING, "overflow", f"OSC: the kernel "
                                           f"dropped {total - kernel_drops} datagrams (receive "
                                           "buffer full); send fewer per second or raise "
                                           "net.core.rmem_max")
                            kernel_drops = total
                if flags & socket.MSG_TRUNC:
                    self._drop("malformed", "(packet)", sender, f"datagram longer than "
                               f"{RECV_BYTES} bytes was cut off; send smaller packets")
                    continue
                self.handle_packet(data, sender)
                burst += 1
                if burst >= YIELD_EVERY:  # a flood: let the audio worker have the GIL
                    burst = 0
                    time.sleep(0)
            if self._heap:
                self._run_due()
            if self._loads:
                self._finish_loads()

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, host: str, port: int) -> None:
        """Send :meth:`notify` events to ``host:port`` (what ``/inst/notify 1`` does)."""
        with self._subs_lock:
            self._subs.add((host, int(port)))

    def unsubscribe(self, host: str, port: int) -> None:
        with self._subs_lock:
            self._subs.discard((host, int(port)))

    @property
    def subscribers(self) -> list[Sender]:
        with self._subs_lock:
            return sorted(self._subs)

    def notify(self, address: str, *args: oscwire.Arg) -> None:
        """Send one message to every subscriber (thread-safe)."""
        data = oscwire.encode_message(address, *args)
        for target in self.subscribers:
            self._sendto(data, target)

    # ------------------------------------------------------------------ aliases

    def add_alias(self, address: str, targets: list[str], invert: list[bool] | None = None,
                  swap: bool = False) -> Alias:
        """Map a literal address (e.g. TouchOSC ``/1/xy``) onto instrument targets.

        One target per argument: ``latent.x``, ``latent.y``, ``param.<name>`` (0..1 via
        ``from_norm``), ``bend`` (0..1 -> -1..1), ``gate``/``freeze`` (>= 0.5 = on),
        ``note.<n>`` (a button: > 0 plays note n at that velocity, 0 releases it), ``note``
        (a note number; an optional following ``velocity`` target, 0 = off, else 0.8),
        ``alloff`` (fires at >= 0.5) and ``""`` (ignore that argument).
        ``invert[i]`` maps u -> 1 - u; ``swap`` swaps the first two arguments.
        """
        where = f"OSC alias {address!r}"
        if not isinstance(address, str) or not address.startswith("/") or \
                oscwire.is_pattern(address):
            raise ControlError(describe(f"{where} address", address, "a literal address "
                                        "starting with '/' (no wildcards)", "write e.g. /1/xy"))
        if address == PREFIX or address.startswith(PREFIX + "/"):
            raise ControlError(describe(f"{where} address", address, f"an address outside {PREFIX}",
                                        f"{PREFIX}/... addresses are built in; alias another"))
        targets = list(targets)
        if not targets:
            raise ControlError(describe(f"{where} targets", targets, ", ".join(ALIAS_TARGETS),
                                        "give one target per argument"))
        for t in targets:
            ok = t in OSC_TARGETS
            if t.startswith("param."):
                params.get(t[6:], where)
                ok = True
            if t.startswith("note."):
                try:
                    C.NoteOn(float(t[5:]))
                    ok = True
                except (ValueError, ControlError):
                    ok = False
            if not ok:
                raise ControlError(describe(f"{where} target", t, ", ".join(ALIAS_TARGETS),
                                            "use a listed target"))
        if "velocity" in targets and (targets.index("velocity") == 0
                                      or targets[targets.index("velocity") - 1] != "note"):
            raise ControlError(describe(f"{where} targets", targets, "'velocity' right after "
                                        "'note'", "put 'velocity' after 'note'"))
        inv = [False] * len(targets) if invert is None else [bool(b) for b in invert]
        if len(inv) != len(targets):
            raise ControlError(describe(f"{where} invert", invert, f"{len(targets)} booleans "
                                        "(one per target)", "give one flag per target"))
        if any(i and t == "note" for i, t in zip(inv, targets, strict=True)):
            raise ControlError(describe(f"{where} invert", invert, "no invert on 'note'",
                                        "invert only 0..1 targets"))
        if swap and len(targets) < 2:
            raise ControlError(describe(f"{where} swap", swap, "swap with 2 or more targets",
                                        "drop swap or add a target"))
        alias = Alias(address, tuple(targets), tuple(inv), bool(swap))
        self._aliases = {**self._aliases, address: alias}
        return alias

    def clear_aliases(self) -> None:
        self._aliases = {}

    @property
    def aliases(self) -> dict[str, Alias]:
        return dict(self._aliases)

    def _alias_commands(self, alias: Alias, msg: Message) -> list[C.Command]:
        n, want = len(msg.types), len(alias.targets)
        if n != want:
            raise _Refused("no_args" if n == 0 else "arg_count",
                           f"alias got {n} arguments, allowed {want} "
                           f"({', '.join(alias.targets)})")
        order = list(range(n))
        if alias.swap:
            order[0], order[1] = 1, 0
        x = y = None
        note: float | None = None
        vel = 0.8
        cmds: list[C.Command] = []
        for target, inv, i in zip(alias.targets, alias.invert, order, strict=True):
            if not target:
                continue
            v = self._num(msg, i, f"alias {alias.address} -> {target}", nil_ok=True)
            if v is None:
                continue
            if target == "note":
                note = v
                continue
            if not 0.0 <= v <= 1.0:
                raise _Refused("out_of_range", describe(f"alias {alias.address} -> {target}", v,
                                                        "[0, 1]", "send 0..1 from the control"))
            u = 1.0 - v if inv else v
            if target == "latent.x":
                x = u
            elif target == "latent.y":
                y = u
            elif target == "velocity":
                vel = u
            elif target.startswith("note."):
                k = float(target[5:])
                cmds.append(C.NoteOn(k, u) if u > 0 else C.NoteOff(k))
            elif target == "bend":
                cmds.append(C.PitchBend(2.0 * u - 1.0))
            elif (cmd := target_command(target, u)) is not None:  # param.<name>, gate, freeze,
                cmds.append(cmd)                                   # alloff (at >= 0.5)
        if note is not None:
            cmds.append(C.NoteOn(note, vel) if vel > 0 else C.NoteOff(note))
        if x is not None or y is not None:
            cmds.insert(0, C.SetLatent(x, y))
        if not cmds:
            raise _Refused("nil", "every argument was nil (N); nothing changed")
        return cmds

    # ------------------------------------------------------------------ packets

    def handle_packet(self, data: bytes, sender: Sender) -> None:
        """Process one datagram as if received from ``sender`` (receiver thread, tests, bench).

        Call it from one thread only (the receiver's, or any when the server is stopped).
        """
        self._counts["received"] += 1
        try:
            if len(data) <= 28 and self._fast(data, sender):
                return
            # the smallest message element takes 8 bytes: a short bundle cannot be over
            if len(data) > 16 + 8 * self.max_messages and data[:8] == oscwire.BUNDLE_TAG:
                n = _count_messages(data, 0, len(data), self.max_messages)
                if n is not None and n > self.max_messages:
                    releases = any(data.find(h, 16) >= 0 for h in _RELEASE_HINTS)
                    cut, used, kept = _cut_bundle(data, 0, len(data), self.max_messages,
                                                  releases)
                    self._drop("too_many", "(packet)", sender, f"bundle holds more than "
                               f"{self.max_messages} messages, allowed {self.max_messages} per "
                               f"datagram; the first {used} are applied"
                               + (f" and the {kept} note-offs/all-offs/gate-offs after them"
                                  if kept else "")
                               + ", the rest is refused unread; send smaller bundles (more "
                               "datagrams)")
                    data = bytes(cut)
        except Exception as e:  # the receiver must survive anything
            self._internal_error(e, sender)
            return
        try:
            packet = oscwire.parse_packet(data)
        except oscwire.OscError as e:
            self._drop("malformed", "(packet)", sender, str(e))
            return
        try:
            if isinstance(packet, Message):
                self._dispatch(packet, sender)
            else:
                self._walk_bundle(packet, None, sender)
        except Exception as e:  # the receiver must survive anything
            self._internal_error(e, sender)

    def _internal_error(self, e: Exception, sender: Sender) -> None:
        if self._rate_ok("traceback")[0]:
            log.exception("OSC internal error on a packet from %s", _sender_text(sender))
        self._drop("internal_error", "(packet)", sender, f"internal error {e!r}; please "
                   "report it with the packet")

    def _fast(self, data: bytes, sender: Sender) -> bool:
        """``/inst/latent ,ff`` / ``/inst/latent/x|y ,f`` with values in range, without the
        parser (the bulk of a controller's traffic); False: take the general path, which
        gives the same result or the refusal."""
        n = len(data)
        if n == 28 and data[:20] == _FAST_LATENT:
            x, y = _FF.unpack_from(data, 20)
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):  # NaN fails too
                return False
            cmd = C.SetLatent(x, y)
            address = "/inst/latent"
        elif n == 24 and (axis := _FAST_AXIS.get(data[:20])) is not None:
            (v,) = _F.unpack_from(data, 20)
            if not 0.0 <= v <= 1.0:
                return False
            cmd = C.SetLatent(x=v) if axis == "x" else C.SetLatent(y=v)
            address = "/inst/latent/" + axis
        else:
            return False
        self._counts["messages"] += 1
        self._send_all([cmd], address, sender)
        return True

    def _walk_bundle(self, bundle: oscwire.Bundle, parent_due: float | None,
                     sender: Sender) -> None:
        due = bundle.unix_s
        if parent_due is not None and (due is None or due < parent_due):
            due = parent_due  # an inner bundle never runs before its outer bundle
        now = time.time()
        if due is not None and due > now + self.horizon_s:
            self._counts["far_future"] += 1
            self._rate_log(logging.WARNING, "far_future",
                           f"OSC {_sender_text(sender)}: bundle dated {due - now:.0f} s ahead "
                           f"(beyond the {self.horizon_s:g} s horizon); applied now; "
                           "fix the sender's clock or send immediate bundles")
            due = parent_due  # now, or together with its (held) outer bundle
        if due is not None and due <= now:
            if parent_due is None:
                self._counts["late"] += 1
            due = None
        for el in bundle.elements:
            if isinstance(el, oscwire.Bundle):
                self._walk_bundle(el, due, sender)
            elif due is None:
                self._dispatch(el, sender)
            else:
                self._seq += 1
                self._counts["scheduled"] += 1
                heapq.heappush(self._heap, (due, self._seq, el, sender))

    def _run_due(self) -> None:
        now = time.time()
        while self._heap and self._heap[0][0] <= now:
            _, _, msg, sender = heapq.heappop(self._heap)
            try:
                self._dispatch(msg, sender)
            except Exception as e:
                if self._rate_ok("traceback")[0]:
                    log.exception("OSC internal error on a held bundle message")
                self._drop("internal_error", msg.address, sender, f"internal error {e!r}")

    def _dispatch(self, msg: Message, sender: Sender) -> None:
        self._counts["messages"] += 1
        if not oscwire.is_pattern(msg.address):
            route = self._routes.get(msg.address)
            alias = self._aliases.get(msg.address) if route is None else None
            if route is None and alias is None:
                self._drop("unknown_address", msg.address, sender,
                           f"no such address (got {len(msg.types)} arguments ',{msg.types[:16]}"
                           f"{'...' if len(msg.types) > 16 else ''}'); send {PREFIX}/... "
                           "addresses (see docs/OSC.md) or add an alias in the patch")
                return
            self._apply(msg, sender, msg.address, route, alias)
            return
        try:
            rx = oscwire.compile_pattern(msg.address)
        except oscwire.OscError as e:
            self._drop("malformed", msg.address, sender, str(e))
            return
        aliases = self._aliases
        hits = [r for a, r in self._routes.items() if rx.fullmatch(a)]
        alias_hits = [al for a, al in aliases.items() if rx.fullmatch(a)]
        fitting = [r for r in hits if _fits(r, msg)]
        fitting_alias = [al for al in alias_hits if len(msg.types) == len(al.targets)
                         and all(t in "ifdhN" for t in msg.types)]
        if not fitting and not fitting_alias:
            reason = "unknown_address" if not hits and not alias_hits else "bad_type"
            self._drop(reason, msg.address, sender,
                       f"pattern matched {len(hits) + len(alias_hits)} addresses but none takes "
                       f"',{msg.types}'; check the pattern and the argument types")
            return
        for r in sorted(fitting, key=lambda r: r.address):
            self._apply(msg, sender, r.address, r, None)
        for al in sorted(fitting_alias, key=lambda a: a.address):
            self._apply(msg, sender, al.address, None, al)

    def _apply(self, msg: Message, sender: Sender, address: str, route: _Route | None,
               alias: Alias | None) -> None:
        nil = msg.types.count("N")
        self._counts["nil_args"] += nil
        try:
            if route is not None:
                n = len(msg.types)
                if n < route.min_args:
                    if n == 0:
                        raise _Refused("no_args", f"got no arguments, needs {route.min_args} "
                                       f"({', '.join(route.slots)}); the message is ignored")
                    raise _Refused("arg_count", f"got {n} arguments, allowed {route.min_args}"
                                   f"..{len(route.slots)} ({', '.join(route.slots)})")
                if n > len(route.slots) and not route.any_args:
                    raise _Refused("arg_count", f"got {n} arguments, allowed {route.min_args}"
                                   f"..{len(route.slots)} ({', '.join(route.slots)})")
                cmds = route.handler(msg, sender)
            else:
                assert alias is not None
                cmds = self._alias_commands(alias, msg)
        except _Refused as r:
            self._drop(r.reason, address, sender, r.text)
            return
        except InstrumentError as e:
            self._drop("out_of_range", address, sender, str(e))
            return
        self._send_all(cmds, address, sender)

    def _send_all(self, cmds: list[C.Command], address: str, sender: Sender) -> None:
        for cmd in cmds:
            try:
                ok = self._send(cmd)
            except InstrumentError as e:
                self._drop("send_failed", address, sender, f"{cmd}: {e}")
                return
            if ok is False:
                self._drop("send_failed", address, sender, f"the engine refused {cmd} (queue "
                           "full?); send fewer messages per second")
                return
        self._counts["applied"] += 1

    def _drop(self, reason: str, address: str, sender: Sender, text: str) -> None:
        self._counts[reason] += 1
        self._counts["dropped"] += 1
        self._rate_log(logging.WARNING, f"{reason}:{address}",
                       f"OSC from {_sender_text(sender)} {address}: {text}")
        if self._fail_ok(sender):
            self._reply(sender, "/inst/fail", address, text)

    def _fail_ok(self, sender: Sender) -> bool:
        """A token bucket per sender: at most ``fail_replies_per_s`` /inst/fail replies a
        second (bursts of as many); the others are counted in ``fail_suppressed``."""
        now = time.monotonic()
        rate = self.fail_replies_per_s
        tokens, last = self._fail_bucket.get(sender, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._fail_bucket[sender] = (tokens, now)
            self._counts["fail_suppressed"] += 1
            return False
        if len(self._fail_bucket) > 1000:  # many senders (spoofed ports): start afresh
            self._fail_bucket.clear()
        self._fail_bucket[sender] = (tokens - 1.0, now)
        return True

    def _rate_ok(self, key: str) -> tuple[bool, int]:
        """(may log now, how many lines of this key were suppressed since the last one)."""
        now = time.monotonic()
        last, suppressed = self._log_last.get(key, (-math.inf, 0))
        if now - last < self.log_interval_s:
            self._log_last[key] = (last, suppressed + 1)
            return False, suppressed + 1
        if len(self._log_last) > 1000:
            self._log_last.clear()
        self._log_last[key] = (now, 0)
        return True, suppressed

    def _rate_log(self, level: int, key: str, text: str) -> None:
        ok, suppressed = self._rate_ok(key)
        if ok:
            log.log(level, "%s%s", text, f" ({suppressed} more like this suppressed)"
                    if suppressed else "")

    # ------------------------------------------------------------------ replies

    def _sendto(self, data: bytes, target: Sender) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendto(data, target)
            self._counts["replies"] += 1
        except OSError as e:
            self._counts["reply_errors"] += 1
            self._rate_log(logging.WARNING, f"reply:{target}", f"OSC reply to "
                           f"{_sender_text(target)} failed: {e}")

    def _reply(self, sender: Sender, address: str, *args: oscwire.Arg,
               types: str | None = None) -> None:
        self._sendto(oscwire.encode_message(address, *args, types=types), sender)

    # ------------------------------------------------------------------ coercion

    @staticmethod
    def _num(msg: Message, i: int, what: str, nil_ok: bool = False) -> float | None:
        t, v = msg.types[i], msg.args[i]
        if t == "N":
            if nil_ok:
                return None
            raise _Refused("nil", f"{what}: got nil (N); nothing changed; send a number")
        if t not in "ifdh":
            shown = repr(v) if t in "sS" else f"type '{t}'"
            raise _Refused("bad_type", f"{what}: got {shown} where a number belongs; send a "
                           "float (,f) or an int (,i)")
        f = float(v)  # type: ignore[arg-type]
        if not math.isfinite(f):
            raise _Refused("non_finite", f"{what}: got {f!r}, allowed a finite number; "
                           "dropped, check the sender's maths")
        return f

    @classmethod
    def _bool(cls, msg: Message, i: int, what: str) -> bool:
        t = msg.types[i]
        if t in "TF":
            return t == "T"
        if t in "ifdh":
            return cls._num(msg, i, what) != 0.0
        return bool(cls._num(msg, i, what))  # raises with the right reason

    # ------------------------------------------------------------------ routes

    def _build_routes(self) -> dict[str, _Route]:
        r: list[_Route] = []

        def add(addr: str, slots: tuple[str, ...], min_args: int,
                handler: Callable[[Message, Sender], list[C.Command]],
                any_args: bool = False) -> None:
            r.append(_Route(PREFIX + addr, slots, min_args, handler, any_args))

        def latent(m: Message, s: Sender) -> list[C.Command]:
            x = self._num(m, 0, "latent x", nil_ok=True)
            y = self._num(m, 1, "latent y", nil_ok=True)
            if x is None and y is None:
                raise _Refused("nil", "got nil (N) on both axes; nothing changed")
            return [C.SetLatent(x, y)]

        def axis(name: str) -> Callable[[Message, Sender], list[C.Command]]:
            def h(m: Message, s: Sender) -> list[C.Command]:
                v = self._num(m, 0, f"latent {name}", nil_ok=True)
                if v is None:
                    raise _Refused("nil", f"latent {name}: got nil (N); the axis is unchanged")
                return [C.SetLatent(**{name: v})]
            return h

        def note(m: Message, s: Sender) -> list[C.Command]:
            n = self._num(m, 0, "note number")
            vel = 0.8
            if len(m.types) > 1:
                v = self._num(m, 1, "note velocity")
                assert v is not None
                if m.types[1] in "ih":  # integers are MIDI velocities 0..127
                    if not 0 <= v <= 127:
                        raise _Refused("out_of_range", describe(
                            "note velocity (int)", int(v), "0..127 (MIDI) or a float 0..1",
                            "send a MIDI velocity or a float"))
                    v = v / 127.0
                vel = v
            if vel == 0.0:
                return [C.NoteOff(n)]  # type: ignore[arg-type]
            return [C.NoteOn(n, vel)]  # type: ignore[arg-type]

        def simple(make: Callable[[float], C.Command], what: str
                   ) -> Callable[[Message, Sender], list[C.Command]]:
            return lambda m, s: [make(self._num(m, 0, what))]  # type: ignore[arg-type]

        def boolean(make: Callable[[bool], C.Command], what: str
                    ) -> Callable[[Message, Sender], list[C.Command]]:
            return lambda m, s: [make(self._bool(m, 0, what))]

        add("/latent", (NUM, NUM), 2, latent)
        add("/latent/x", (NUM,), 1, axis("x"))
        add("/latent/y", (NUM,), 1, axis("y"))
        add("/latent/freeze", (BOOL,), 1, boolean(C.FreezeLatent, "freeze"))
        add("/note", (NUM, NUM), 1, note)
        add("/note/off", (NUM,), 1, simple(C.NoteOff, "note number"))
        add("/bend", (NUM,), 1, simple(C.PitchBend, "pitch bend"))
        add("/gate", (BOOL,), 1, boolean(C.Gate, "gate"))
        add("/alloff", (), 0, lambda m, s: [C.AllNotesOff()], any_args=True)
        for spec in params.PARAMS.values():
            add(f"/param/{spec.name}", (NUM,), 1, self._param_handler(spec, norm=False))
            add(f"/param/{spec.name}/norm", (NUM,), 1, self._param_handler(spec, norm=True))
        add("/patch/load", (STR,), 1, self._h_patch)
        add("/status", (), 0, self._h_status, any_args=True)
        add("/notify", (BOOL,), 1, self._h_notify)
        add("/params", (), 0, self._h_params, any_args=True)
        add("/ping", (NUM, NUM, NUM, NUM), 0, self._h_ping, any_args=True)
        return {route.address: route for route in r}

    def _param_handler(self, spec: params.ParamSpec, norm: bool
                       ) -> Callable[[Message, Sender], list[C.Command]]:
        def h(m: Message, s: Sender) -> list[C.Command]:
            v = self._num(m, 0, f"parameter {spec.name}{' (norm)' if norm else ''}")
            assert v is not None
            if norm:
                if not 0.0 <= v <= 1.0:
                    raise _Refused("out_of_range", describe(
                        f"parameter {spec.name} (norm)", v, "[0, 1]",
                        f"send 0..1, or real units to {PREFIX}/param/{spec.name}"))
                v = spec.from_norm(v)
            return [C.SetParam(spec.name, v)]
        return h

    def _h_patch(self, m: Message, s: Sender) -> list[C.Command]:
        if m.types[0] not in "sS":
            raise _Refused("bad_type", f"patch path: got type '{m.types[0]}', allowed a string "
                           "(,s); send the path as a string")
        path = str(m.args[0])
        if self._load_patch is None:
            cmds: list[C.Command] = [C.LoadPatch(path)]
            self._reply(s, "/inst/done", PREFIX + "/patch/load", path)
            return cmds
        try:
            job = self._load_patch(path)
        except Busy as e:
            raise _Refused("busy", str(e)) from None
        except (InstrumentError, OSError) as e:
            raise _Refused("out_of_range", self._load_error(path, e)) from None
        if isinstance(job, Future):
            self._loads.append((job, s, path))  # answered by _finish_loads when it is done
        else:
            self._reply(s, "/inst/done", PREFIX + "/patch/load", path)
        return []

    @staticmethod
    def _load_error(path: str, e: BaseException) -> str:
        if isinstance(e, OSError):
            return describe("patch file", path, "a readable file",
                            f"check the path ({e.strerror or e})")
        return str(e)

    def _finish_loads(self) -> None:
        """Reply to the senders of the patch loads that have completed (receiver thread)."""
        address = PREFIX + "/patch/load"
        waiting = []
        for job, sender, path in self._loads:
            if not job.done():
                waiting.append((job, sender, path))
                continue
            e = job.exception() if not job.cancelled() else ControlError(
                f"patch load {path!r}: cancelled (the instrument is stopping)")
            if e is None:
                self._reply(sender, "/inst/done", address, path)
            elif isinstance(e, InstrumentError | OSError):
                self._drop("out_of_range", address, sender, self._load_error(path, e))
            else:
                log.error("patch load %r failed: %r", path, e)
                self._drop("internal_error", address, sender, f"internal error {e!r} loading "
                           f"{path!r}; please report it")
        self._loads = waiting

    def _h_status(self, m: Message, s: Sender) -> list[C.Command]:
        info: dict = {}
        if self._status is not None:
            try:
                info = dict(self._status())
            except InstrumentError as e:
                raise _Refused("send_failed", f"status unavailable: {e}") from None
        info["osc"] = self.counters
        flat: list[oscwire.Arg] = []
        for k, v in _flatten(info):
            flat += [k, _osc_value(v)]
        self._reply(s, PREFIX + "/status/reply", *flat)
        return []

    def _h_notify(self, m: Message, s: Sender) -> list[C.Command]:
        on = self._bool(m, 0, "notify")
        (self.subscribe if on else self.unsubscribe)(*s)
        self._reply(s, "/inst/done", PREFIX + "/notify", int(on))
        return []

    def _h_params(self, m: Message, s: Sender) -> list[C.Command]:
        for p in params.PARAMS.values():
            self._reply(s, PREFIX + "/params/reply", p.name, float(p.min), float(p.max),
                        float(p.default), p.units, p.warp)
        self._reply(s, "/inst/done", PREFIX + "/params", len(params.PARAMS))
        return []

    def _h_ping(self, m: Message, s: Sender) -> list[C.Command]:
        self._reply(s, PREFIX + "/pong", *m.args, types=m.types)
        return []
