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
