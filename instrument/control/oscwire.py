"""A strict OSC 1.0 packet parser, a small encoder, and address pattern matching.

Strict means: a packet that is not exactly what its type tags declare is refused with an
:class:`OscError` naming what is wrong (truncated argument, non-zero padding, unknown type
tag, non-UTF-8 address, trailing bytes, bad bundle element size). A cut-off float is never
read as 0.0.

Argument types (Python value after parsing)::

    i int32 -> int      h int64 -> int       f float32 -> float   d float64 -> float
    s string -> str     S symbol -> str      c char -> str (1 char)
    b blob -> bytes     t timetag -> int (raw 64-bit NTP)
    T -> True           F -> False           N nil -> None        I infinitum -> INFINITUM
    m MIDI -> bytes (4: port, status, data1, data2)   r RGBA -> int (uint32)

Timetags are raw 64-bit NTP values (seconds since 1900 in the high 32 bits); ``1`` means
"immediately". :func:`timetag_to_unix` / :func:`unix_to_timetag` convert to and from Unix
seconds.
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from typing import Union

from instrument.errors import ControlError

IMMEDIATE = 1
NTP_UNIX_OFFSET_S = 2208988800  # seconds from 1900-01-01 to 1970-01-01
MAX_BUNDLE_DEPTH = 16
BUNDLE_TAG = b"#bundle\x00"


class OscError(ControlError):
    """An OSC packet is malformed, or an address pattern is invalid."""


class _Infinitum:
    """The ``I`` (infinitum / impulse) argument."""

    _instance: _Infinitum | None = None

    def __new__(cls) -> _Infinitum:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "INFINITUM"


INFINITUM = _Infinitum()

Arg = Union[int, float, str, bytes, bool, None, _Infinitum]  # noqa: UP007 (runtime alias)


@dataclass(frozen=True)
class Message:
    address: str
    types: str  # the type tags without the leading comma
    args: tuple[Arg, ...]


@dataclass(frozen=True)
class Bundle:
    timetag: int  # raw 64-bit NTP; IMMEDIATE (1) = now
    elements: tuple[Message | Bundle, ...]

    @property
    def immediate(self) -> bool:
        return self.timetag == IMMEDIATE

    @property
    def unix_s(self) -> float | None:
        """The timetag in Unix seconds, or None for "immediately"."""
        return None if self.immediate else timetag_to_unix(self.timetag)


Packet = Message | Bundle


def timetag_to_unix(timetag: int) -> float:
    """Raw NTP timetag -> Unix seconds (fractional)."""
    return (timetag >> 32) - NTP_UNIX_OFFSET_S + (timetag & 0xFFFFFFFF) / 2**32


def unix_to_timetag(unix_s: float) -> int:
    """Unix seconds -> raw NTP timetag (never returns the reserved IMMEDIATE value)."""
    ntp = unix_s + NTP_UNIX_OFFSET_S
    if not 0 <= ntp < 2**32:
        raise OscError(f"timetag: got {unix_s!r} Unix seconds, allowed 1900..2036; "
                       "send a time inside the NTP era")
    sec = int(ntp)
    frac = min(int((ntp - sec) * 2**32), 2**32 - 1)
    return max((sec << 32) | frac, IMMEDIATE + 1)


# --------------------------------------------------------------------------- parsing


class _Reader:
    __slots__ = ("data", "pos", "end", "where")

    def __init__(self, data: bytes, start: int, end: int, where: str) -> None:
        self.data, self.pos, self.end, self.where = data, start, end, where

    def fail(self, what: str) -> OscError:
        return OscError(f"OSC {self.where}: {what} at byte {self.pos}; the packet is malformed, "
                        "fix the sender's encoding (OSC 1.0)")

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise self.fail(f"{what} needs {n} bytes but only {self.end - self.pos} remain "
                            "(truncated)")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def pad(self, used: int, what: str) -> None:
        """Skip the zero padding after ``used`` bytes of content; refuse non-zero bytes."""
        n = (-used) % 4
        if n:
            b = self.take(n, f"padding of {what}")
            if b.strip(b"\x00"):
                raise self.fail(f"non-zero padding after {what}")

    def string(self, what: str) -> bytes:
        nul = self.data.find(b"\x00", self.pos, self.end)
        if nul < 0:
            raise self.fail(f"{what} has no terminating NUL (truncated)")
        raw = self.data[self.pos:nul]
        self.pos = nul + 1
        self.pad(len(raw) + 1, what)
        return raw


def _decode(raw: bytes, what: str, r: _Reader) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OscError(f"OSC {r.where}: {what} {raw!r} is not valid UTF-8 (byte "
                       f"0x{raw[e.start]:02X} at {e.start}); send UTF-8 text") from None


# Characters an address may not hold: C0 controls (U+0000..U+001F) and space. Anything else
# (DEL, non-ASCII, '#', pattern characters) is accepted here; patterns are checked on dispatch.
_ADDRESS_BAD_CHAR = re.compile(r"[\x00-\x20]")

# Fixed-size argument tags -> struct codes; tags that carry no bytes -> their value.
_FIXED_CODES = {"i": "i", "f": "f", "d": "d", "h": "q", "t": "Q", "r": "I", "m": "4s"}
_NO_DATA_VALUES: dict[str, Arg] = {"T": True, "F": False, "N": None, "I": INFINITUM}
_MAX_CACHED_TAGS = 64  # longer tag strings are planned afresh (keeps the cache small)
_UNPACKED = object()  # layout slot: the next unpacked value
_Plan = tuple[struct.Struct, tuple[object, ...] | None]


def _build_plan(types: str) -> _Plan | None:
    """One struct for a tag string of only fixed-size / no-data tags, plus (when no-data tags
    are present) the layout: per tag, its value or _UNPACKED; None when any tag needs the
    general path."""
    codes: list[str] = []
    layout: list[object] = []
    for t in types:
        code = _FIXED_CODES.get(t)
        if code is not None:
            codes.append(code)
            layout.append(_UNPACKED)
        elif t in _NO_DATA_VALUES:
            layout.append(_NO_DATA_VALUES[t])
        else:
            return None
    has_no_data = len(codes) != len(layout)
    return struct.Struct(">" + "".join(codes)), tuple(layout) if has_no_data else None


_cached_plan = functools.lru_cache(maxsize=256)(_build_plan)


def _parse_message(data: bytes, start: int, end: int) -> Message:
    r = _Reader(data, start, end, "message")
    addr = _decode(r.string("address"), "address", r)
    if not addr.startswith("/"):
        raise OscError(f"OSC message: address {addr!r} does not start with '/'; "
                       "send an address like /inst/ping")
    if _ADDRESS_BAD_CHAR.search(addr) is not None:
        raise OscError(f"OSC message: address {addr!r} contains spaces or control characters; "
                       "send printable characters only")
    r.where = f"message {addr}"
    if r.pos == r.end:  # old-style message without a type tag string: no arguments
        return Message(addr, "", ())
    tag_raw = r.string("type tag string")
    if not tag_raw.startswith(b","):
        raise OscError(f"OSC message {addr}: type tag string {tag_raw!r} does not start with ','; "
                       "send a type tag string such as ',ff'")
    types = _decode(tag_raw[1:], "type tag string", r)
    plan = _cached_plan(types) if len(types) <= _MAX_CACHED_TAGS else _build_plan(types)
    if plan is not None and plan[0].size == r.end - r.pos:
        # Fast path: every argument is fixed-size and the bytes left are exactly what the
        # tags declare, so one unpack reads them all. Any other length (truncated, trailing
        # bytes) takes the general path below, which names the exact problem.
        values = plan[0].unpack_from(data, r.pos)
        if plan[1] is None:
            return Message(addr, types, values)
        unpacked = iter(values)
        return Message(addr, types, tuple(next(unpacked) if v is _UNPACKED else v
                                          for v in plan[1]))  # type: ignore[misc]
    args: list[Arg] = []
    for t in types:
        if t == "i":
            args.append(struct.unpack(">i", r.take(4, "int32 'i'"))[0])
        elif t == "f":
            args.append(struct.unpack(">f", r.take(4, "float32 'f'"))[0])
        elif t == "d":
            args.append(struct.unpack(">d", r.take(8, "float64 'd'"))[0])
        elif t == "h":
            args.append(struct.unpack(">q", r.take(8, "int64 'h'"))[0])
        elif t == "t":
            args.append(struct.unpack(">Q", r.take(8, "timetag 't'"))[0])
        elif t in "sS":
            args.append(_decode(r.string(f"string '{t}'"), f"string '{t}'", r))
        elif t == "b":
            n = struct.unpack(">i", r.take(4, "blob size"))[0]
            if n < 0:
                raise r.fail(f"blob size {n} is negative")
            args.append(r.take(n, "blob data"))
            r.pad(n, "blob")
        elif t == "c":
            code = struct.unpack(">I", r.take(4, "char 'c'"))[0]
            if code > 0x10FFFF:
                raise r.fail(f"char code {code} is not a character")
            args.append(chr(code))
        elif t == "m":
            args.append(r.take(4, "MIDI 'm'"))
        elif t == "r":
            args.append(struct.unpack(">I", r.take(4, "RGBA 'r'"))[0])
        elif t == "T":
            args.append(True)
        elif t == "F":
            args.append(False)
        elif t == "N":
            args.append(None)
        elif t == "I":
            args.append(INFINITUM)
        else:
            allowed = "i f d s S h t T F N I b c m r"
            raise OscError(f"OSC message {addr}: type tag {t!r} in ',{types}' is not supported "
                           f"(allowed {allowed}; arrays '[ ]' are not accepted); "
                           "send standard OSC 1.0 type tags")
    if r.pos != r.end:
        raise r.fail(f"{r.end - r.pos} trailing bytes after the arguments ',{types}'")
    return Message(addr, types, tuple(args))


def _parse(data: bytes, start: int, end: int, depth: int) -> Packet:
    n = end - start
    if n == 0:
        raise OscError("OSC packet: got 0 bytes; an OSC packet holds a message or a bundle")
    if n % 4:
        raise OscError(f"OSC packet: got {n} bytes, allowed a multiple of 4; the packet is "
                       "truncated or not OSC")
    if data.startswith(BUNDLE_TAG, start, end):
        if depth >= MAX_BUNDLE_DEPTH:
            raise OscError(f"OSC bundle: nested deeper than {MAX_BUNDLE_DEPTH}; flatten it")
        r = _Reader(data, start + 8, end, "bundle")
        timetag = struct.unpack(">Q", r.take(8, "timetag"))[0]
        elements: list[Packet] = []
        while r.pos < r.end:
            size = struct.unpack(">i", r.take(4, "element size"))[0]
            if size <= 0 or size % 4 or r.pos + size > r.end:
                raise r.fail(f"bundle element size {size} (allowed a positive multiple of 4, "
                             f"at most the {r.end - r.pos} bytes left)")
            elements.append(_parse(data, r.pos, r.pos + size, depth + 1))
            r.pos += size
        return Bundle(timetag, tuple(elements))
    if not data.startswith(b"/", start, end):
        head = bytes(data[start:start + 12])
        raise OscError(f"OSC packet: starts with {head!r}, allowed '/' (message) or '#bundle'; "
                       "this is not OSC, check what is sending to this port")
    return _parse_message(data, start, end)


def parse_packet(data: bytes) -> Packet:
    """Parse one UDP datagram into a :class:`Message` or :class:`Bundle` (or raise OscError)."""
    return _parse(bytes(data), 0, len(data), 0)


# --------------------------------------------------------------------------- encoding


def _pad_str(b: bytes) -> bytes:
    return b + b"\x00" * (4 - len(b) % 4)


def _infer(arg: Arg) -> str:
    if arg is True:
        return "T"
    if arg is False:
        return "F"
    if arg is None:
        return "N"
    if arg is INFINITUM:
        return "I"
    if isinstance(arg, int):
        return "i" if -2**31 <= arg < 2**31 else "h"
    if isinstance(arg, float):
        return "f"
    if isinstance(arg, str):
        return "s"
    if isinstance(arg, bytes | bytearray):
        return "b"
    raise OscError(f"OSC encode: argument {arg!r} of type {type(arg).__name__} has no OSC type; "
                   "send int, float, str, bytes, bool or None")


def encode_message(address: str, *args: Arg, types: str | None = None) -> bytes:
    """Encode one message; ``types`` (without comma, one tag per argument) forces tags,
    e.g. ``types="dd"`` or ``"h"``; the values given for T F N I tags are ignored."""
    if types is None:
        types = "".join(_infer(a) for a in args)
    if len(types) != len(args):
        raise OscError(f"OSC encode {address}: {len(args)} arguments for tags ',{types}'; "
                       "give one argument per tag")
    out = [_pad_str(address.encode("utf-8")), _pad_str(("," + types).encode("ascii"))]
    for t, a in zip(types, args, strict=True):
        if t in "TFNI":
            continue
        if t == "i":
            out.append(struct.pack(">i", a))
        elif t == "f":
            out.append(struct.pack(">f", a))
        elif t == "d":
            out.append(struct.pack(">d", a))
        elif t == "h":
            out.append(struct.pack(">q", a))
        elif t == "t":
            out.append(struct.pack(">Q", a))
        elif t in "sS":
            out.append(_pad_str(str(a).encode("utf-8")))
        elif t == "b":
            b = bytes(a)  # type: ignore[arg-type]
            out.append(struct.pack(">i", len(b)) + b + b"\x00" * ((-len(b)) % 4))
        elif t == "c":
            out.append(struct.pack(">I", ord(a)))  # type: ignore[arg-type]
        elif t == "m":
            out.append(bytes(a)[:4].ljust(4, b"\x00"))  # type: ignore[arg-type]
        elif t == "r":
            out.append(struct.pack(">I", a))
        else:
            raise OscError(f"OSC encode {address}: type tag {t!r} is not supported")
    return b"".join(out)


def encode_bundle(elements: list[bytes], timetag: int = IMMEDIATE) -> bytes:
    """Encode a bundle from already-encoded elements (messages or bundles)."""
    body = b"".join(struct.pack(">i", len(e)) + e for e in elements)
    return BUNDLE_TAG + struct.pack(">Q", timetag) + body


# --------------------------------------------------------------------------- patterns

_PATTERN_CHARS = frozenset("*?[]{}")


def is_pattern(address: str) -> bool:
    """True when the address holds OSC 1.0 wildcard characters."""
    return not _PATTERN_CHARS.isdisjoint(address)


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile an OSC 1.0 address pattern (``* ? [abc] [!a-z] {foo,bar}``) to a regex."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise OscError(f"OSC pattern {pattern!r}: '[' at {i} has no ']'; close it")
            body = pattern[i + 1:j]
            neg = body.startswith("!")
            if neg:
                body = body[1:]
            if not body or "/" in body:
                raise OscError(f"OSC pattern {pattern!r}: empty or '/' in [{body}]; "
                               "list characters, e.g. [abc] or [a-z]")
            parts = []
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    lo, hi = body[k], body[k + 2]
                    if lo > hi:
                        raise OscError(f"OSC pattern {pattern!r}: range {lo}-{hi} is reversed")
                    parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
                    k += 3
                else:
                    parts.append(re.escape(body[k]))
                    k += 1
            out.append(("[^/" if neg else "[") + "".join(parts) + "]")
            i = j
        elif ch == "{":
            j = pattern.find("}", i + 1)
            if j < 0:
                raise OscError(f"OSC pattern {pattern!r}: '{{' at {i} has no '}}'; close it")
            alts = pattern[i + 1:j].split(",")
            if any("/" in a for a in alts):
                raise OscError(f"OSC pattern {pattern!r}: '/' inside {{...}}; not allowed")
            out.append("(?:" + "|".join(re.escape(a) for a in alts) + ")")
            i = j
        elif ch in "]}":
            raise OscError(f"OSC pattern {pattern!r}: unmatched {ch!r} at {i}; remove it")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


def match(pattern: str, address: str) -> bool:
    """True when the OSC address pattern matches the literal address."""
    if not is_pattern(pattern):
        return pattern == address
    return compile_pattern(pattern).fullmatch(address) is not None
