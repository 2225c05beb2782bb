"""A byte-stream MIDI parser for raw streams (serial ports, logged captures).

mido's own byte parser loses notes sent with running status; this one follows the MIDI 1.0
rules:

* running status: data bytes after a complete channel message reuse its status byte;
* note-on with velocity 0 comes out as ``note_off`` (velocity 0);
* realtime bytes (0xF8..0xFF: clock, start, continue, stop, active sensing, reset) are
  counted and dropped the moment they are seen, even between the bytes of another message,
  so a clock flood never queues anything and never delays the control messages around it;
* system exclusive is collected in a bounded buffer: a sysex longer than
  ``max_sysex_bytes`` or cut short by a new status byte is dropped (counted), and the
  messages after it parse normally;
* data bytes with no status to belong to (stray bytes) are counted and dropped.
"""

from __future__ import annotations

import mido

# Data bytes that follow each channel-message status (high nibble).
_CHANNEL_DATA_BYTES = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
# System common messages (no running status) and their data byte counts.
_COMMON_DATA_BYTES = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0}
_CLOCK = 0xF8


class MidiByteParser:
    """Turn raw MIDI bytes, in chunks of any size, into mido messages."""

    def __init__(self, max_sysex_bytes: int = 4096) -> None:
        if max_sysex_bytes < 0:
            raise ValueError(f"max_sysex_bytes: got {max_sysex_bytes}, allowed >= 0")
        self.max_sysex_bytes = max_sysex_bytes
        self._status: int | None = None  # status of the message being collected / running
        self._running = False  # _status may be reused (channel messages only)
        self._need = 0  # data bytes a complete message needs
        self._data: list[int] = []
        self._sysex: bytearray | None = None  # collecting a sysex when not None
        self._sysex_discarding = False  # an oversized sysex: drop data until a status byte
        # Counters (read them for status; they only grow).
        self.messages = 0
        self.realtime_filtered = 0  # every 0xF8..0xFF byte
        self.clock_filtered = 0  # 0xF8 clock bytes only
        self.stray_bytes = 0  # data bytes with no status, undefined status bytes, lone F7
        self.sysex_dropped = 0  # unterminated or oversized sysex messages

    @property
    def pending_bytes(self) -> int:
        """Bytes held for an incomplete message (bounded by 2 + max_sysex_bytes)."""
        return len(self._data) + (len(self._sysex) if self._sysex is not None else 0)

    def reset(self) -> None:
        """Forget any partial message and the running status (counters are kept)."""
        self._status, self._running, self._need, self._data = None, False, 0, []
        self._sysex, self._sysex_discarding = None, False

    def feed(self, data: bytes | bytearray | memoryview) -> list[mido.Message]:
        """Parse ``data`` and return the messages completed by it, in order."""
        out: list[mido.Message] = []
        for byte in bytes(data):
            if byte >= 0xF8:  # realtime: never queued, never interrupts anything
                self.realtime_filtered += 1
                if byte == _CLOCK:
                    self.clock_filtered += 1
            elif byte >= 0x80:
                self._status_byte(byte, out)
            else:
                self._data_byte(byte, out)
        return out

    # -- internals ---------------------------------------------------------------------
    def _end_sysex(self, terminated: bool, out: list[mido.Message]) -> None:
        if self._sysex is not None:
            if terminated:
                out.append(mido.Message("sysex", data=bytes(self._sysex)))
                self.messages += 1
            else:
                self.sysex_dropped += 1
        # an oversized sysex (discarding) was counted when it overflowed
        self._sysex, self._sysex_discarding = None, False

    def _status_byte(self, byte: int, out: list[mido.Message]) -> None:
        in_sysex = self._sysex is not None or self._sysex_discarding
        if byte == 0xF7:
            if in_sysex:
                self._end_sysex(True, out)
            else:
                self.stray_bytes += 1
            return
        if in_sysex:
            self._end_sysex(False, out)  # a new status cuts an unterminated sysex short
        if self._data:  # an incomplete message is abandoned; its bytes were strays
            self.stray_bytes += len(self._data)
        self._data = []
        if byte == 0xF0:
            self._status, self._running, self._need = None, False, 0
            self._sysex = bytearray()
        elif byte < 0xF0:
            self._status, self._running = byte, True
            self._need = _CHANNEL_DATA_BYTES[byte & 0xF0]
        elif byte in _COMMON_DATA_BYTES:
            self._status, self._running = byte, False
            self._need = _COMMON_DATA_BYTES[byte]
            if self._need == 0:
                self._emit(out)
        else:  # 0xF4, 0xF5: undefined; they still cancel running status
            self._status, self._running, self._need = None, False, 0
            self.stray_bytes += 1

    def _data_byte(self, byte: int, out: list[mido.Message]) -> None:
        if self._sysex_discarding:
            return
        if self._sysex is not None:
            if len(self._sysex) >= self.max_sysex_bytes:
                self._sysex = None
                self._sysex_discarding = True
                self.sysex_dropped += 1
            else:
                self._sysex.append(byte)
            return
        if self._status is None:
            self.stray_bytes += 1
            return
        self._data.append(byte)
        if len(self._data) == self._need:
            self._emit(out)

    def _emit(self, out: list[mido.Message]) -> None:
        status = self._status
        assert status is not None
        data = self._data
        self._data = []
        if not self._running:
            self._status = None  # system common: the next data bytes are strays
        kind = status & 0xF0
        if kind == 0x90 and data[1] == 0:
            msg = mido.Message("note_off", channel=status & 0x0F, note=data[0], velocity=0)
        else:
            msg = mido.Message.from_bytes([status, *data])
        out.append(msg)
        self.messages += 1
