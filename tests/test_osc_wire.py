"""The strict OSC 1.0 parser and encoder, cross-checked against python-osc's builder."""

from __future__ import annotations

import datetime
import math
import struct
from pathlib import Path

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from instrument.control import oscwire as w
from instrument.errors import ControlError

CASES = Path(__file__).parent / "cases" / "osc"


def case(name: str) -> bytes:
    return (CASES / f"{name}.bin").read_bytes()


def test_every_type_tag_round_trips() -> None:
    args = (7, 0.5, 0.1, "héllo", "sym", 2**40, 12345 << 32, True, False, None, w.INFINITUM,
            b"\x01\x02\x03", "x", b"\x00\x90\x3c\x64", 0xFF0080FF)
    types = "ifdsShtTFNIbcmr"
    data = w.encode_message("/inst/all", *args, types=types)
    assert len(data) % 4 == 0
    m = w.parse_packet(data)
    assert isinstance(m, w.Message)
    assert m.address == "/inst/all" and m.types == types
    assert m.args == args


def test_python_osc_builder_packets_parse_the_same() -> None:
    """A second implementation's encoding (python-osc) reads back as it was built."""
    b = OscMessageBuilder("/inst/latent")
    b.add_arg(0.25, "f")
    b.add_arg(0.75, "d")
    b.add_arg("s", "s")
    b.add_arg(3, "i")
    b.add_arg(b"\xff\xfe", "b")
    b.add_arg(True, "T")
    b.add_arg(None, "N")
    m = w.parse_packet(b.build().dgram)
    assert m == w.Message("/inst/latent", "fdsibTN", (0.25, 0.75, "s", 3, b"\xff\xfe", True,
                                                     None))
    bb = OscBundleBuilder(IMMEDIATELY)
    bb.add_content(OscMessageBuilder("/inst/ping").build())
    bundle = w.parse_packet(bb.build().dgram)
    assert isinstance(bundle, w.Bundle) and bundle.immediate
    assert bundle.elements == (w.Message("/inst/ping", "", ()),)


def test_cases_parse_to_the_declared_values() -> None:
    assert w.parse_packet(case("latent_xy_ff_baseline")) == w.Message("/latent/xy", "ff",
                                                                      (0.25, 0.75))
    assert w.parse_packet(case("latent_x_i_1")).args == (1,)
    assert w.parse_packet(case("latent_xy_dd")).types == "dd"
    assert w.parse_packet(case("latent_freeze_T")).args == (True,)
    assert w.parse_packet(case("latent_x_N_nil")).args == (None,)
    assert w.parse_packet(case("latent_x_no_args")).args == ()
    assert w.parse_packet(case("latent_x_s_string")).args == ("0.5",)
    assert math.isnan(w.parse_packet(case("latent_x_f_nan")).args[0])
    assert w.parse_packet(case("latent_x_f_posinf")).args == (math.inf,)
    big = w.parse_packet(case("large_9k_floats"))
    # The README says 3,000 floats; the file really holds 2,400 (16 + 2,404 + 9,600 bytes).
    assert len(big.args) == 2400 and big.types == "f" * 2400
    assert big.args[-1] == pytest.approx(0.99958, abs=1e-5)
    nested = w.parse_packet(case("bundle_nested"))
    assert isinstance(nested, w.Bundle)
    assert nested.elements[0].address == "/latent/xy"
    assert nested.elements[1].elements[0].args == (pytest.approx(0.9),)
    future = w.parse_packet(case("bundle_future_2035"))
    when = datetime.datetime.fromtimestamp(future.unix_s, datetime.UTC)
    assert when.year == 2035


@pytest.mark.parametrize("name, words", [
    ("truncated_xy_missing_float", "truncated"),
    ("empty", "0 bytes"),
    ("not_osc_text", "multiple of 4"),
    ("address_non_utf8", "UTF-8"),
])
def test_hostile_cases_are_refused_naming_the_problem(name: str, words: str) -> None:
    with pytest.raises(w.OscError, match=words) as e:
        w.parse_packet(case(name))
    assert isinstance(e.value, ControlError)


@pytest.mark.parametrize("data, words", [
    (b"/a\x00\x00,f\x00\x00\x3f\x80", "multiple of 4"),           # ragged length
    (b"/a\x00\x01,f\x00\x00\x3f\x80\x00\x00", "non-zero padding"),  # dirty address padding
    (b"/a\x00\x00,q\x00\x00", "type tag 'q'"),                       # unknown tag
    (b"/a\x00\x00,[f]\x00\x00\x00\x00", "arrays"),                   # arrays not accepted
    (b"/a\x00\x00ff\x00\x00", "does not start with ','"),            # no comma
    (b"/a\x00\x00,i\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00", "trailing"),
    (b"/a\x00\x00,s\x00\x00abcd", "no terminating NUL"),
    (b"/a\x00\x00,b\x00\x00\x00\x00\x00\x08abcd", "truncated"),      # blob longer than data
    (b"/a\x00\x00,d\x00\x00\x00\x00\x00\x00", "truncated"),          # half a double
    (b"x\x00\x00\x00", "not OSC"),
    (b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", 64) + b"/a\x00\x00",
     "element size"),
    (b"/a b\x00\x00\x00\x00", "spaces"),
    (b"/a\x00\x00,s\x00\x00\xff\x00\x00\x00", "UTF-8"),
])
def test_malformed_packets_are_refused(data: bytes, words: str) -> None:
    with pytest.raises(w.OscError, match=words):
        w.parse_packet(data)


def test_deep_bundle_nesting_is_refused() -> None:
    data = w.encode_message("/a")
    for _ in range(w.MAX_BUNDLE_DEPTH + 1):
        data = w.encode_bundle([data])
    with pytest.raises(w.OscError, match="nested deeper"):
        w.parse_packet(data)


def test_missing_type_tag_string_means_no_arguments() -> None:
    assert w.parse_packet(b"/inst/ping\x00\x00") == w.Message("/inst/ping", "", ())


@pytest.mark.parametrize("pattern, address, hit", [
    ("/inst/latent/*", "/inst/latent/x", True),
    ("/inst/latent/*", "/inst/latent", False),
    ("/inst/*", "/inst/latent/x", False),            # * never crosses '/'
    ("/inst/latent/?", "/inst/latent/y", True),
    ("/inst/latent/[xy]", "/inst/latent/y", True),
    ("/inst/latent/[!x]", "/inst/latent/x", False),
    ("/inst/latent/[!x]", "/inst/latent/y", True),
    ("/inst/param/[a-h]*_ms", "/inst/param/glide_ms", True),
    ("/inst/param/[a-h]*_ms", "/inst/param/release_ms", False),
    ("/inst/{note,bend}", "/inst/bend", True),
    ("/inst/{note,bend}", "/inst/gate", False),
    ("/inst/note/off", "/inst/note/off", True),
    ("/inst/a.b", "/inst/aXb", False),               # regex characters are literal
])
def test_pattern_matching(pattern: str, address: str, hit: bool) -> None:
    assert w.match(pattern, address) is hit


@pytest.mark.parametrize("pattern", ["/a/[xy", "/a/{x,y", "/a/x]", "/a/[z-a]"])
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(w.OscError, match="pattern"):
        w.compile_pattern(pattern)


def test_timetags() -> None:
    t = 1_700_000_000.25
    tt = w.unix_to_timetag(t)
    assert tt >> 32 == 1_700_000_000 + w.NTP_UNIX_OFFSET_S
    assert w.timetag_to_unix(tt) == pytest.approx(t, abs=1e-6)
    assert w.Bundle(w.IMMEDIATE, ()).unix_s is None
    assert w.Bundle(tt, ()).unix_s == pytest.approx(t, abs=1e-6)


# --------------------------------------------------------------------------- fast paths
# The address check and the fixed-size argument read are compiled / one-call fast paths;
# these tests hold them to the reference behaviour they replaced.


def _reference_address_refused(addr: str) -> bool:
    """The per-character address check the compiled one replaced (the reference)."""
    return any(ord(ch) < 0x20 or ch == " " for ch in addr)


def test_address_check_matches_the_reference_on_every_code_point() -> None:
    differ = [c for c in range(0x110000)
              if (w._ADDRESS_BAD_CHAR.search("/a" + chr(c) + "b") is not None)
              != _reference_address_refused("/a" + chr(c) + "b")]
    assert differ == []


# Bytes an address is drawn from: C0 controls, space, DEL, '#', pattern and regex characters,
# high bytes (invalid alone), valid multi-byte UTF-8 (C1 NEL, line separator, BOM, emoji) and
# an encoded lone surrogate (invalid in strict UTF-8).
_HOSTILE_PIECES = ([bytes([b]) for b in range(1, 0x21)]
                   + [b"\x7f", b"#", b"*", b"?", b"[", b"]", b"{", b"}", b"!", b",", b"-",
                      b"/", b".", b"\\", b"^", b"$", b"a", b"Z", b"0", b"_"]
                   + [bytes([b]) for b in (0x80, 0xBF, 0xC0, 0xC3, 0xE2, 0xF0, 0xFF)]
                   + ["\u0085".encode(), "\u2028".encode(), "\ufeff".encode(), "é".encode(),
                      "\U0001F3B9".encode(), b"\xed\xa0\x80"])


def _random_addresses(count: int) -> list[bytes]:
    import random
    rng = random.Random(20260)
    out = [b"/", b"//", b"/ ", b"/\x1f", b"/\x7f", b"/#bundle", b"/" + b"a" * 4000,
           b"/" + b"a" * 4000 + b" ", b"/" + "é".encode() * 1500 + b"\x01"]
    for _ in range(count):
        n = rng.choice((1, 2, 3, 5, 8, 20, 60, 300))
        out.append(b"/" + b"".join(rng.choice(_HOSTILE_PIECES) for _ in range(n)))
    return out


def test_parser_accepts_and_refuses_addresses_like_the_reference() -> None:
    checked = {"accepted": 0, "utf8": 0, "chars": 0}
    for raw in _random_addresses(3000):
        packet = raw + b"\x00" * (4 - len(raw) % 4) + b",f\x00\x00" + struct.pack(">f", 0.5)
        try:
            addr = raw.decode("utf-8")
        except UnicodeDecodeError:
            with pytest.raises(w.OscError, match="not valid UTF-8"):
                w.parse_packet(packet)
            checked["utf8"] += 1
            continue
        if _reference_address_refused(addr):
            with pytest.raises(w.OscError, match="spaces or control characters"):
                w.parse_packet(packet)
            checked["chars"] += 1
        else:
            assert w.parse_packet(packet) == w.Message(addr, "f", (0.5,))
            checked["accepted"] += 1
    assert min(checked.values()) > 100, checked  # every branch really exercised


@pytest.mark.parametrize("raw, words", [
    (b"", "0 bytes"),                                 # nothing at all
    (b"\x00\x00\x00\x00", "not OSC"),                 # empty address
    (b" /a\x00", "not OSC"),                          # leading space
    (b"#a\x00\x00", "not OSC"),                       # '#' but not a bundle
])
def test_addresses_without_a_leading_slash_are_refused(raw: bytes, words: str) -> None:
    with pytest.raises(w.OscError, match=words):
        w.parse_packet(raw)


def _describe(fn, data: bytes) -> tuple:
    """A comparable outcome: argument types and reprs (NaN-safe), or the error text."""
    try:
        m = fn(data)
    except w.OscError as e:
        return ("error", str(e))
    return ("ok", m.address, m.types, tuple((type(a).__name__, repr(a)) for a in m.args))


def test_fixed_size_fast_path_matches_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random tag strings and payloads (exact, short, long) give the same result with the
    one-unpack fast path as with the per-tag general path."""
    import random
    rng = random.Random(7)
    packets = []
    for _ in range(1500):
        n_tags = rng.choice((0, 1, 2, 3, 5, 9, 70, 200))  # > 64: planned without the cache
        alphabet = "ifdhtrmTFNI" * 8 + "sSbcq" if n_tags < 64 else "ifdhtrmTFNI" * 60 + "s"
        types = "".join(rng.choice(alphabet) for _ in range(n_tags))
        size = sum({"d": 8, "h": 8, "t": 8}.get(t, 0 if t in "TFNI" else 4) for t in types)
        size = max(0, size + rng.choice((0, 0, 0, -4, 4, -8)))
        head = w._pad_str(b"/inst/x") + w._pad_str(("," + types).encode())
        packets.append(head + rng.randbytes(size))
    fast = [_describe(w.parse_packet, p) for p in packets]
    # No plan: every message takes the per-tag general path.
    monkeypatch.setattr(w, "_MAX_CACHED_TAGS", -1)
    monkeypatch.setattr(w, "_build_plan", lambda types: None)
    general = [_describe(w.parse_packet, p) for p in packets]
    assert fast == general
    assert sum(f[0] == "ok" for f in fast) > 300  # both accepted and refused packets seen
    assert sum(f[0] == "error" for f in fast) > 300


def test_no_data_tags_sit_between_fixed_arguments() -> None:
    data = w.encode_message("/a", True, 1.5, None, 7, w.INFINITUM, False, types="TfNiIF")
    assert w.parse_packet(data).args == (True, 1.5, None, 7, w.INFINITUM, False)


def test_bundle_tag_is_only_read_inside_its_element() -> None:
    """A 4-byte element '#bun' followed by 'dle\\0' is not a bundle: the tag is cut off."""
    data = (w.BUNDLE_TAG + struct.pack(">Q", w.IMMEDIATE) + struct.pack(">i", 4) + b"#bun"
            + b"dle\x00")
    with pytest.raises(w.OscError, match="not OSC"):
        w.parse_packet(data)
