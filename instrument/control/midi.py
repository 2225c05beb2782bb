"""MIDI in: map mido messages to commands, and open ports by name.

* :class:`MidiMapper` — patch ``[[midi]]`` entries -> commands (notes, pitch bend, 7-bit
  CC, 14-bit CC pairs, NRPN, sustain pedal, all-notes-off), with per-mapping deadband and
  smoothing. Thread-safe; no I/O.
* :class:`MidiInput` — opens an input port (case-insensitive substring of its name) or a
  virtual port with mido's rtmidi backend (``MIDO_BACKEND`` respected) and feeds the
  mapper from mido's callback thread. When no MIDI backend works it logs one line and the
  instrument plays on without MIDI.
* :func:`list_ports` — port names for ``instrument devices``; never raises.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import mido

from instrument.control.commands import AllNotesOff, Command, NoteOff, NoteOn, PitchBend, SetParam
from instrument.control.midiparse import MidiByteParser
from instrument.control.patches import SWITCH_TARGETS, MidiMap, Patch, target_command
from instrument.errors import DeviceError, describe

log = logging.getLogger("instrument.midi")

DEFAULT_BACKEND = "mido.backends.rtmidi"
REALTIME_TYPES = frozenset({"clock", "start", "continue", "stop", "active_sensing", "reset"})
ALL_OFF_CCS = frozenset({120, 123, 124, 125, 126, 127})  # sound off, notes off, mode changes
RESET_CONTROLLERS_CC = 121
MAX14 = 16383
PAIR_TIMEOUT_S = 0.02  # an MSB with no LSB after this long is used on its own (LSB = 0)
SMOOTH_SETTLED = 1e-4  # a smoother this close to its goal snaps onto it


def bend_value(pitch: int) -> float:
    """mido pitch (-8192..8191) -> -1..1, piecewise so both ends and the centre are exact."""
    return pitch / 8192.0 if pitch < 0 else pitch / 8191.0


@dataclass
class _Lane:
    """Runtime state of one mapping: deadband direction, smoother, last value sent."""

    spec: MidiMap
    accepted: float | None = None  # last input that passed the deadband
    direction: int = 0  # +1 / -1 of the last accepted move, 0 before any move
    goal: float = 0.0  # smoother target
    value: float | None = None  # smoother output
    t_s: float = 0.0  # time of the smoother's last update
    sent: float | None = None  # last value turned into a command

    def deadband_pass(self, u: float) -> bool:
        last = self.accepted
        if last is None:
            self.accepted = u
            return True
        d = u - last
        if d == 0.0:
            return False
        sign = 1 if d > 0 else -1
        if u in (0.0, 1.0) or sign == self.direction or abs(d) > self.spec.deadband:
            self.accepted, self.direction = u, sign
            return True
        return False  # a small reversal: jitter of a knob at rest

    def advance(self, now_s: float) -> None:
        if self.value is None:
            return
        dt = max(0.0, now_s - self.t_s)
        self.t_s = now_s
        a = 1.0 - math.exp(-dt * 1000.0 / self.spec.smooth_ms)
        self.value += (self.goal - self.value) * a
        if abs(self.goal - self.value) < SMOOTH_SETTLED:
            self.value = self.goal


@dataclass
class _ChannelState:
    """Per-channel 14-bit and NRPN/RPN assembly state."""

    msb_pending: dict[int, tuple[int, float]] = field(default_factory=dict)  # cc -> (msb, t)
    msb_last: dict[int, int] = field(default_factory=dict)
    param_msb: int | None = None
    param_lsb: int | None = None
    registered: bool = False  # RPN (101/100) selected rather than NRPN (99/98)
    data_pending: tuple[int, float] | None = None
    data_msb_last: int | None = None
    sustain: bool = False  # this channel's pedal is down
    sustained: set[int] = field(default_factory=set)  # keys released while it was down


class MidiMapper:
    """Turn mido messages into commands following a patch's ``[[midi]]`` entries.

    ``channel`` (1..16, None = any) filters every message; each mapping may filter further.
    When the map has no ``note`` entry every key plays. Counters: ``received``, ``mapped``
    (produced at least one command), ``ignored``, ``clock_filtered`` (realtime messages).

    Channels: the engine has one voice pool keyed by note number, so the mapper counts
    who holds each note: a channel holds it while its key is down or while that channel's
    sustain pedal keeps it. ``NoteOff(n)`` is sent only when the last holder lets go, so a
    note-off (or a pedal release) on channel 1 does not stop the same note held on channel
    2. A note-off for a note no channel holds (pressed before this mapper existed, or a
    stray one) is passed on as ``NoteOff``. All-notes-off (CC 120, 123..127) is global: it
    stops every note on every channel.
    """

    def __init__(self, patch_midi_map: Sequence[MidiMap] | None = None,
                 channel: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if channel is not None and not (isinstance(channel, int) and 1 <= channel <= 16):
            raise DeviceError(describe("MIDI channel", channel, "1..16 or None (any)",
                                       "pass a channel number as printed on the controller"))
        maps = list(Patch.default().midi if patch_midi_map is None else patch_midi_map)
        self.channel = channel
        self._clock = clock
        self._lanes = [_Lane(m) for m in maps]
        self._cc = [ln for ln in self._lanes if ln.spec.kind == "cc"]
        self._cc14 = [ln for ln in self._lanes if ln.spec.kind == "cc14"]
        self._nrpn = [ln for ln in self._lanes if ln.spec.kind == "nrpn"]
        self._notes = [ln for ln in self._lanes if ln.spec.kind == "note"]
        self._cc14_numbers = {ln.spec.number for ln in self._cc14}
        self._channels = [_ChannelState() for _ in range(16)]
        self._holders: dict[int, set[int]] = {}  # note -> channels (0..15) holding it
        self._lock = threading.Lock()
        self.received = 0
        self.mapped = 0
        self.ignored = 0
        self.clock_filtered = 0
        self.commands = 0
        self._parser: MidiByteParser | None = None

    @property
    def wants_tick(self) -> bool:
        """True when :meth:`tick` has work: smoothing or 14-bit pairs to time out."""
        return any(ln.spec.smooth_ms > 0 for ln in self._lanes) or bool(self._cc14 or self._nrpn)

    def status(self) -> dict[str, int]:
        return {"received": self.received, "mapped": self.mapped, "ignored": self.ignored,
                "clock_filtered": self.clock_filtered, "commands": self.commands}

    # -- entry points -------------------------------------------------------------------
    def map(self, msg: mido.Message, now_s: float | None = None) -> list[Command]:
        """Commands for one message (possibly none)."""
        with self._lock:
            self.received += 1
            if msg.type in REALTIME_TYPES:
                self.clock_filtered += 1
                return []
            now = self._clock() if now_s is None else now_s
            out: list[Command] = []
            ch = getattr(msg, "channel", None)
            if ch is not None and (self.channel is None or ch + 1 == self.channel):
                self._dispatch(msg, ch, now, out)
            if out:
                self.mapped += 1
                self.commands += len(out)
            else:
                self.ignored += 1
            return out

    def feed_bytes(self, data: bytes, now_s: float | None = None) -> list[Command]:
        """Commands for a raw byte stream (serial port, capture), via MidiByteParser."""
        if self._parser is None:
            self._parser = MidiByteParser()
        before = self._parser.realtime_filtered
        msgs = self._parser.feed(data)
        with self._lock:
            n = self._parser.realtime_filtered - before
            self.received += n
            self.clock_filtered += n
        out: list[Command] = []
        for m in msgs:
            out.extend(self.map(m, now_s))
        return out

    def tick(self, now_s: float | None = None) -> list[Command]:
        """Advance smoothers and use 14-bit MSBs whose LSB never came; call every few ms."""
        with self._lock:
            now = self._clock() if now_s is None else now_s
            out: list[Command] = []
            for ch, st in enumerate(self._channels):
                for cc, (msb, t) in list(st.msb_pending.items()):
                    if now - t >= PAIR_TIMEOUT_S:
                        del st.msb_pending[cc]
                        self._cc14_value(ch, cc, msb << 7, now, out)
                if st.data_pending is not None and now - st.data_pending[1] >= PAIR_TIMEOUT_S:
                    msb = st.data_pending[0]
                    st.data_pending = None
                    self._nrpn_value(ch, st, msb << 7, now, out)
            for ln in self._lanes:
                if ln.spec.smooth_ms > 0 and ln.value is not None and ln.value != ln.goal:
                    ln.advance(now)
                    self._send(ln, ln.value, out)
            self.commands += len(out)
            return out

    # -- internals ----------------------------------------------------------------------
    @staticmethod
    def _channel_ok(spec: MidiMap, ch: int) -> bool:
        return spec.channel is None or spec.channel == ch + 1

    def _send(self, ln: _Lane, u: float, out: list[Command]) -> None:
        if ln.sent is not None and abs(u - ln.sent) < 1e-9:
            return
        ln.sent = u
        cmd = target_command(ln.spec.target, u)
        if cmd is not None:
            out.append(cmd)

    def _value(self, ln: _Lane, ch: int, u: float, now: float, out: list[Command]) -> None:
        """One normalised input value for a lane: invert, deadband, smoothing, command."""
        u = 1.0 - u if ln.spec.invert else u
        if ln.spec.target == "sustain":  # per channel: the lane's deadband is shared
            down = u >= 0.5
            if down != self._channels[ch].sustain:
                self._sustain(ch, down, out)
            return
        if not ln.deadband_pass(u):
            return
        if ln.spec.smooth_ms > 0 and ln.spec.target not in SWITCH_TARGETS:
            if ln.value is None:
                ln.value, ln.t_s = u, now
            else:
                ln.advance(now)
            ln.goal = u
            u = ln.value
        self._send(ln, u, out)

    def _sustain(self, ch: int, down: bool, out: list[Command]) -> None:
        st = self._channels[ch]
        st.sustain = down
        if not down:
            for n in sorted(st.sustained):
                self._release(ch, n, out)
            st.sustained.clear()

    def _release(self, ch: int, note: int, out: list[Command]) -> None:
        """Channel ``ch`` lets go of ``note``; NoteOff when no other channel holds it."""
        holders = self._holders.get(note)
        if holders is not None:
            holders.discard(ch)
            if holders:
                return  # another channel still holds the note
            del self._holders[note]
        out.append(NoteOff(note))

    def held_notes(self) -> dict[int, tuple[int, ...]]:
        """``{note: (channels 1..16 holding it)}`` — keys down or held by a pedal."""
        with self._lock:
            return {n: tuple(sorted(c + 1 for c in chs))
                    for n, chs in sorted(self._holders.items())}

    def _dispatch(self, msg: mido.Message, ch: int, now: float, out: list[Command]) -> None:
        t = msg.type
        if t == "note_on" and msg.velocity > 0:
            self._note(ch, msg.note, msg.velocity, now, out)
        elif t in ("note_on", "note_off"):
            self._note(ch, msg.note, 0, now, out)
        elif t == "pitchwheel":
            out.append(PitchBend(bend_value(msg.pitch)))
        elif t == "control_change":
            self._control(ch, msg.control, msg.value, now, out)

    def _note(self, ch: int, note: int, velocity: int, now: float,
              out: list[Command]) -> None:
        st = self._channels[ch]
        lanes = [ln for ln in self._notes if self._channel_ok(ln.spec, ch)
                 and ln.spec.note_lo <= note <= ln.spec.note_hi]
        play = not self._notes or any(ln.spec.target == "play" for ln in lanes)
        if play:
            if velocity > 0:
                st.sustained.discard(note)
                self._holders.setdefault(note, set()).add(ch)
                out.append(NoteOn(note, velocity / 127.0))
            elif st.sustain:
                holders = self._holders.get(note)
                if holders is None or ch in holders:  # (a stray off on another channel
                    st.sustained.add(note)  # is ignored) this channel's pedal holds it
                    self._holders.setdefault(note, set()).add(ch)
            else:
                self._release(ch, note, out)
        if velocity > 0:
            for ln in lanes:
                if ln.spec.target != "play":
                    span = ln.spec.note_hi - ln.spec.note_lo
                    self._value(ln, ch, (note - ln.spec.note_lo) / span if span else 0.0,
                                now, out)

    def _control(self, ch: int, cc: int, value: int, now: float, out: list[Command]) -> None:
        st = self._channels[ch]
        if cc in ALL_OFF_CCS:  # global: the engine stops every voice, whoever holds it
            for other in self._channels:
                other.sustained.clear()
            self._holders.clear()
            st.sustain = False
            out.append(AllNotesOff())
            return
        if cc == RESET_CONTROLLERS_CC:
            self._sustain(ch, False, out)
            out.append(PitchBend(0.0))
            return
        if cc in (99, 98, 101, 100):
            if cc in (99, 101):
                st.param_msb = value
            else:
                st.param_lsb = value
            st.registered = cc >= 100
            st.data_pending = None
            return
        if cc == 6:
            if st.data_pending is not None:  # an MSB with no LSB: use it alone
                self._nrpn_value(ch, st, st.data_pending[0] << 7, now, out)
            st.data_pending = (value, now)
            return
        if cc == 38:
            if st.data_pending is not None:
                msb = st.data_pending[0]
                st.data_pending = None
            elif st.data_msb_last is not None:
                msb = st.data_msb_last  # fine adjustment: LSB alone
            else:
                return
            self._nrpn_value(ch, st, (msb << 7) | value, now, out)
            return
        if cc < 32 and cc in self._cc14_numbers:
            pending = st.msb_pending.pop(cc, None)
            if pending is not None:  # previous MSB never got its LSB
                self._cc14_value(ch, cc, pending[0] << 7, now, out)
            st.msb_pending[cc] = (value, now)
        elif 32 <= cc < 64 and cc - 32 in self._cc14_numbers:
            pending = st.msb_pending.pop(cc - 32, None)
            msb = pending[0] if pending is not None else st.msb_last.get(cc - 32)
            if msb is not None:
                self._cc14_value(ch, cc - 32, (msb << 7) | value, now, out)
        for ln in self._cc:
            if ln.spec.number == cc and self._channel_ok(ln.spec, ch):
                self._value(ln, ch, value / 127.0, now, out)

    def _cc14_value(self, ch: int, cc: int, v14: int, now: float, out: list[Command]) -> None:
        self._channels[ch].msb_last[cc] = v14 >> 7
        for ln in self._cc14:
            if ln.spec.number == cc and self._channel_ok(ln.spec, ch):
                self._value(ln, ch, v14 / MAX14, now, out)

    def _nrpn_value(self, ch: int, st: _ChannelState, v14: int, now: float,
                    out: list[Command]) -> None:
        st.data_msb_last = v14 >> 7
        number = ((st.param_msb or 0) << 7) | (st.param_lsb or 0)
        if st.registered:
            if number == 0:  # RPN 0: pitch bend sensitivity, MSB semitones + LSB cents
                semis = min(24.0, (v14 >> 7) + (v14 & 0x7F) / 100.0)
                out.append(SetParam("bend_range_st", semis))
            return
        if st.param_msb == 127 and st.param_lsb == 127:
            return  # the null parameter: nothing selected
        for ln in self._nrpn:
            if ln.spec.number == number and self._channel_ok(ln.spec, ch):
                self._value(ln, ch, v14 / MAX14, now, out)

    def nrpn_selected(self, channel: int = 1) -> int | None:
        """The NRPN parameter number selected on ``channel`` (1..16), for status/tests."""
        st = self._channels[channel - 1]
        if st.registered or (st.param_msb is None and st.param_lsb is None):
            return None
        return ((st.param_msb or 0) << 7) | (st.param_lsb or 0)


# -- ports -----------------------------------------------------------------------------
def backend_name(backend: str | None = None) -> str:
    """The mido backend to use: the argument, else ``MIDO_BACKEND``, else rtmidi."""
    return backend or os.environ.get("MIDO_BACKEND") or DEFAULT_BACKEND


def _load_backend(name: str) -> mido.Backend:
    be = mido.Backend(name, load=True)
    be.get_input_names()  # rtmidi creates a client here: fails without ALSA/JACK
    return be


def list_ports(backend: str | None = None) -> dict:
    """``dict(inputs=[...], outputs=[...], backend=name, error=None | reason)``; never raises."""
    name = backend_name(backend)
    try:
        be = _load_backend(name)
        return {"inputs": list(be.get_input_names()), "outputs": list(be.get_output_names()),
                "backend": name, "error": None}
    except Exception as err:  # any backend failure means "no MIDI here", never a crash
        return {"inputs": [], "outputs": [], "backend": name, "error": _reason(err)}


def _reason(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return f"{type(err).__name__}: {text}"


def match_port(wanted: str, names: Sequence[str]) -> str:
    """The one port whose name contains ``wanted`` (case-insensitive); DeviceError if not."""
    w = wanted.casefold()
    exact = [n for n in names if n.casefold() == w]
    if exact:
        return exact[0]
    hits = [n for n in names if w in n.casefold()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(repr(n) for n in names) or "none"
    if not hits:
        raise DeviceError(describe("MIDI input port", wanted, f"a part of one of: {listing}",
                                   "pass part of a listed name (see 'instrument devices'), "
                                   "or use a virtual port"))
    raise DeviceError(describe("MIDI input port", wanted,
                               "a name matching exactly one port; it matches "
                               + ", ".join(repr(n) for n in hits),
                               "give a longer part of the name"))


class MidiInput:
    """A MIDI input feeding ``on_command`` from mido's callback thread.

    ``port_name`` picks an existing input (case-insensitive substring); otherwise a
    virtual input named ``virtual_name`` (default ``"instrument"``) is created for other
    programs to connect to. :meth:`open` returns True when MIDI is on, False (after one log
    line saying why) when no MIDI backend works, and raises DeviceError when the backend
    works but no port matches ``port_name``.
    """

    last_off_reason: str | None = None  # why the last try_open() gave no input

    def __init__(self, on_command: Callable[[Command], object], port_name: str | None = None,
                 virtual_name: str | None = None, mapper: MidiMapper | None = None,
                 backend: str | None = None, client_name: str = "instrument") -> None:
        self.on_command = on_command
        self.port_name = port_name
        self.virtual_name = virtual_name
        self.mapper = mapper if mapper is not None else MidiMapper()
        self.backend = backend_name(backend)
        self.client_name = client_name
        self.opened_name: str | None = None
        self.off_reason: str | None = None
        self.callback_errors = 0
        self._port = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @classmethod
    def try_open(cls, on_command: Callable[[Command], object], port_name: str | None = None,
                 virtual_name: str | None = None, mapper: MidiMapper | None = None,
                 backend: str | None = None) -> MidiInput | None:
        """Open and return the input, or log why MIDI is off and return None.

        The reason is kept in :attr:`MidiInput.last_off_reason` for the start-up banner.
        """
        inp = cls(on_command, port_name, virtual_name, mapper, backend)
        try:
            if inp.open():
                MidiInput.last_off_reason = None
                return inp
            MidiInput.last_off_reason = inp.off_reason
            return None
        except DeviceError as err:
            log.warning("MIDI is off: %s", err)
            MidiInput.last_off_reason = str(err)
            return None

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> bool:
        if self._port is not None:
            return True
        try:
            be = _load_backend(self.backend)
            names = list(be.get_input_names())
        except Exception as err:  # no ALSA sequencer, no JACK server, missing module...
            self.off_reason = (f"MIDI backend {self.backend!r} does not work ({_reason(err)}); "
                               "the instrument plays on without MIDI (start JACK or load ALSA "
                               "snd-seq, or set MIDO_BACKEND)")
            log.warning("MIDI is off: %s", self.off_reason)
            return False
        try:
            if self.port_name is not None:
                target = match_port(self.port_name, names)
                port = be.open_input(target, callback=self._on_message)
            else:
                target = self.virtual_name or "instrument"
                port = be.open_input(target, client_name=self.client_name,
                                     callback=self._on_message)
        except DeviceError:
            raise
        except Exception as err:
            raise DeviceError(describe("MIDI input port", self.port_name or self.virtual_name,
                                       "a port that can be opened", f"it failed with "
                                       f"{_reason(err)}; check it is not in exclusive use"))\
                from None
        self._port = port
        self.opened_name = target
        self.off_reason = None
        log.info("MIDI in: %s (%s)", target, self.backend)
        if self.mapper.wants_tick:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick_loop, name="midi-tick",
                                            daemon=True)
            self._ticker.start()
        return True

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1.0)
            self._ticker = None
        if self._port is not None:
            try:
                self._port.close()
            finally:
                self._port = None

    def __enter__(self) -> MidiInput:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict:
        return {"open": self.is_open, "port": self.opened_name, "backend": self.backend,
                "off_reason": self.off_reason, "callback_errors": self.callback_errors,
                **self.mapper.status()}

    def _deliver(self, cmds: list[Command]) -> None:
        for cmd in cmds:
            try:
                self.on_command(cmd)
            except Exception:  # a consumer bug must not kill the MIDI thread
                self.callback_errors += 1
                if self.callback_errors == 1:
                    log.exception("MIDI: on_command failed for %s (further failures counted)",
                                  cmd)

    def _on_message(self, msg: mido.Message) -> None:
        try:
            cmds = self.mapper.map(msg)
        except Exception:
            self.callback_errors += 1
            if self.callback_errors == 1:
                log.exception("MIDI: could not map %s (further failures counted)", msg)
            return
        self._deliver(cmds)

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self._deliver(self.mapper.tick())
            except Exception:
                self.callback_errors += 1
