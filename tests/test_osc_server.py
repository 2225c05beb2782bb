"""The OSC server with real UDP packets on 127.0.0.1.

The hostile case packets (tests/cases/osc, copies of shared/cases/osc) use addresses like
``/latent/x``; :func:`rewrite` moves them into ``/inst/...`` byte by byte, keeping everything
after the address (and so the hostile property) as it was. After each hostile packet the
baseline packet is sent to prove the server still answers.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrument import params
from instrument.control import commands as C
from instrument.control import oscwire as w
from instrument.control.osc import OscServer
from instrument.errors import PatchError

CASES = Path(__file__).parent / "cases" / "osc"
WAIT_S = 10.0  # a failsafe for a lost reply, never a speed requirement
_tokens = itertools.count(1)


def rewrite(data: bytes) -> bytes:
    """Move a case packet's addresses into /inst (``/latent/xy`` -> ``/inst/latent``)."""
    if data.startswith(w.BUNDLE_TAG):
        out, pos = bytearray(data[:16]), 16
        while pos + 4 <= len(data):
            size = struct.unpack(">i", data[pos:pos + 4])[0]
            inner = rewrite(data[pos + 4:pos + 4 + size])
            out += struct.pack(">i", len(inner)) + inner
            pos += 4 + size
        return bytes(out + data[pos:])
    nul = data.find(b"\x00")
    if not data.startswith(b"/") or nul < 0:
        return data
    addr, rest = data[:nul], data[(nul // 4 + 1) * 4:]
    if addr == b"/latent/xy":
        addr = b"/inst/latent"
    elif addr.startswith(b"/latent"):
        addr = b"/inst" + addr
    return addr + b"\x00" * (4 - len(addr) % 4) + rest


def case(name: str) -> bytes:
    return rewrite((CASES / f"{name}.bin").read_bytes())


class Client:
    """A real UDP socket that sends to the server and reads its replies."""

    def __init__(self, server: OscServer) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(WAIT_S)
        self.target = ("127.0.0.1", server.port)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def msg(self, address: str, *args: w.Arg, types: str | None = None) -> None:
        self.send(w.encode_message(address, *args, types=types))

    def recv(self) -> w.Message:
        data, _ = self.sock.recvfrom(65536)
        m = w.parse_packet(data)
        assert isinstance(m, w.Message)
        return m

    def sync(self) -> list[w.Message]:
        """Ping and wait for the pong: every earlier packet has then been handled.

        Returns the replies that arrived before the pong.
        """
        token = next(_tokens)
        self.msg("/inst/ping", token)
        replies = []
        while True:
            m = self.recv()
            if m.address == "/inst/pong" and m.args == (token,):
                return replies
            replies.append(m)

    def sync_retrying(self, tries: int = 5) -> int:
        """Like :meth:`sync`, re-pinging when a ping is lost; returns the pings sent."""
        self.sock.settimeout(2.0)
        try:
            for n in range(1, tries + 1):
                try:
                    self.sync()
                    return n
                except TimeoutError:
                    continue
        finally:
            self.sock.settimeout(WAIT_S)
        raise AssertionError(f"no pong after {tries} pings")


class Sink:
    """The ``send`` callable: records (unix time, command)."""

    def __init__(self) -> None:
        self.items: list[tuple[float, C.Command]] = []
        self.lock = threading.Lock()

    def __call__(self, cmd: C.Command) -> None:
        with self.lock:
            self.items.append((time.time(), cmd))

    def take(self) -> list[C.Command]:
        with self.lock:
            out = [c for _, c in self.items]
            self.items.clear()
        return out


def load_patch(path: str) -> None:
    if not path.endswith("good.toml"):
        raise PatchError(f"patch {path}: file not found; check the path")


@pytest.fixture()
def rig() -> Iterator[tuple[OscServer, Client, Sink]]:
    sink = Sink()
    server = OscServer(sink, status=lambda: {"sample_rate": 48000, "voices": 2,
                                             "model": "default"},
                       load_patch=load_patch, port=0, log_interval_s=3600.0)
    server.start()
    client = Client(server)
    try:
        yield server, client, sink
    finally:
        client.sock.close()
        server.stop()


def assert_alive(client: Client, sink: Sink) -> None:
    client.send(case("latent_xy_ff_baseline"))
    client.sync()
    assert sink.take() == [C.SetLatent(0.25, 0.75)]


def test_baseline_and_bound_port(rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    assert server.port > 0
    rcvbuf = server._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # type: ignore[union-attr]
    assert rcvbuf >= 65536
    assert_alive(client, sink)
    assert server.counters["applied"] >= 1


ACCEPTED = {
    "latent_x_i_1": [C.SetLatent(x=1.0)],
    "latent_xy_dd": [C.SetLatent(0.39, 0.7)],
    "latent_freeze_T": [C.FreezeLatent(True)],
    "bundle_immediate": [C.SetLatent(0.25, 0.75)],
    "bundle_future_2035": [C.SetLatent(0.25, 0.75)],
    "bundle_nested": [C.SetLatent(0.25, 0.75), C.SetLatent(x=struct.unpack(">f", struct.pack(
        ">f", 0.9))[0])],
    "pattern_star": [C.SetLatent(x=0.5), C.SetLatent(y=0.5)],  # not freeze, not /inst/latent
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_cases(rig: tuple[OscServer, Client, Sink], name: str) -> None:
    server, client, sink = rig
    client.send(case(name))
    replies = client.sync()
    assert sink.take() == ACCEPTED[name]
    assert [r for r in replies if r.address == "/inst/fail"] == []
    if name == "bundle_future_2035":
        assert server.counters["far_future"] == 1
    assert_alive(client, sink)


REFUSED = {  # case -> counter reason, words in the /inst/fail reply
    "latent_x_N_nil": ("nil", "nil"),
    "latent_x_no_args": ("no_args", "no arguments"),
    "latent_x_s_string": ("bad_type", "'0.5' where a number belongs"),
    "latent_x_f_nan": ("non_finite", "nan"),
    "latent_x_f_posinf": ("non_finite", "inf"),
    "truncated_xy_missing_float": ("malformed", "truncated"),
    "not_osc_text": ("malformed", "not OSC"),
    "empty": ("malformed", "0 bytes"),
    "address_non_utf8": ("malformed", "UTF-8"),
    "large_9k_floats": ("unknown_address", "2400 arguments"),  # arrived whole, refused
    "touchosc_1_xy_ff": ("unknown_address", "alias"),  # no alias yet
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_cases(rig: tuple[OscServer, Client, Sink], name: str) -> None:
    server, client, sink = rig
    reason, words = REFUSED[name]
    client.send(case(name))
    replies = client.sync()
    assert sink.take() == []
    assert server.counters[reason] == 1 and server.counters["dropped"] == 1
    fails = [r for r in replies if r.address == "/inst/fail"]
    assert len(fails) == 1 and words in fails[0].args[1]
    assert_alive(client, sink)


def test_nil_leaves_one_axis_unchanged(rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    client.msg("/inst/latent", None, 0.375, types="Nf")
    client.sync()
    assert sink.take() == [C.SetLatent(None, 0.375)]
    assert server.counters["nil_args"] == 1


def test_string_number_gives_one_log_line(rig: tuple[OscServer, Client, Sink],
                                          caplog: pytest.LogCaptureFixture) -> None:
    _, client, sink = rig
    with caplog.at_level(logging.WARNING, logger="instrument.control.osc"):
        for _ in range(5):
            client.send(case("latent_x_s_string"))
        client.sync()
    lines = [r.getMessage() for r in caplog.records if "0.5" in r.getMessage()]
    assert len(lines) == 1
    assert "127.0.0.1:" in lines[0] and "/inst/latent/x" in lines[0] and "send a float" in lines[0]
    assert_alive(client, sink)


def test_touchosc_alias_with_swap_and_invert(rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    server.add_alias("/1/xy", ["latent.x", "latent.y"], invert=[False, True], swap=True)
    client.send(case("touchosc_1_xy_ff"))  # /1/xy 0.25 0.75
    client.sync()
    assert sink.take() == [C.SetLatent(0.75, 0.75)]  # x = 0.75 (swapped), y = 1 - 0.25
    server.add_alias("/1/fader1", ["param.gain_db"])
    server.add_alias("/1/push1", ["note.60"])
    client.msg("/1/fader1", 1.0)
    client.msg("/1/push1", 1.0)
    client.msg("/1/push1", 0.0)
    client.msg("/1/*", 0.5)  # a pattern reaches the aliases whose argument count fits
    client.sync()
    gain = params.PARAMS["gain_db"]
    assert sink.take() == [C.SetParam("gain_db", gain.max), C.NoteOn(60, 1.0), C.NoteOff(60),
                           C.SetParam("gain_db", gain.from_norm(0.5)), C.NoteOn(60, 0.5)]
    with pytest.raises(Exception, match="target"):
        server.add_alias("/2/xy", ["latent.z"])
    with pytest.raises(Exception, match="wildcards"):
        server.add_alias("/2/*", ["latent.x"])


def test_instrument_verbs(rig: tuple[OscServer, Client, Sink]) -> None:
    _, client, sink = rig
    client.msg("/inst/note", 60, 0.5)
    client.msg("/inst/note", 62, 127)  # an int velocity is MIDI 0..127
    client.msg("/inst/note", 60, 0.0)  # velocity 0 = off
    client.msg("/inst/note", 64)  # default velocity
    client.msg("/inst/note/off", 62)
    client.msg("/inst/bend", -1)
    client.msg("/inst/gate", 1.0)  # Pd sends floats: a literal address coerces
    client.msg("/inst/gate", False)
    client.msg("/inst/latent/freeze", 0)
    client.msg("/inst/alloff")
    client.msg("/inst/param/glide_ms", 100)
    client.msg("/inst/param/attack_ms/norm", 1.0)
    client.msg("/inst/param/*_db", -12.0)  # a pattern: every *_db parameter
    client.sync()
    assert sink.take() == [
        C.NoteOn(60, 0.5), C.NoteOn(62, 1.0), C.NoteOff(60), C.NoteOn(64, 0.8), C.NoteOff(62),
        C.PitchBend(-1.0), C.Gate(True), C.Gate(False), C.FreezeLatent(False), C.AllNotesOff(),
        C.SetParam("glide_ms", 100.0), C.SetParam("attack_ms", params.PARAMS["attack_ms"].max),
        C.SetParam("gain_db", -12.0), C.SetParam("harmonic_db", -12.0),
        C.SetParam("noise_db", -12.0)]


@pytest.mark.parametrize("address, args, reason, words", [
    ("/inst/latent", (0.5, 1.5), "out_of_range", "[0, 1]"),
    ("/inst/param/gain_db", (99.0,), "out_of_range", "[-60, 12] dB"),
    ("/inst/param/gain_db/norm", (2.0,), "out_of_range", "[0, 1]"),
    ("/inst/param/nope", (1.0,), "unknown_address", "docs/OSC.md"),
    ("/inst/latent", (0.5,), "arg_count", "got 1 arguments"),
    ("/inst/note", (60, 200), "out_of_range", "0..127"),
    ("/inst/bend", ("up",), "bad_type", "'up'"),
    ("/inst/latent/{", (0.5,), "malformed", "no '}'"),
    ("/inst/latent/freeze/*", (0.5,), "unknown_address", "none takes"),
])
def test_refused_messages_reply_fail(rig: tuple[OscServer, Client, Sink], address: str,
                                     args: tuple, reason: str, words: str) -> None:
    server, client, sink = rig
    client.msg(address, *args)
    replies = client.sync()
    assert sink.take() == []
    assert server.counters[reason] == 1
    assert len(replies) == 1 and replies[0].address == "/inst/fail"
    assert replies[0].args[0] == address and words in replies[0].args[1]


def test_status_params_patch_replies(rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    client.msg("/inst/status")
    (status,) = client.sync()
    assert status.address == "/inst/status/reply"
    kv = dict(zip(status.args[::2], status.args[1::2], strict=True))
    assert kv["sample_rate"] == 48000 and kv["model"] == "default"
    assert kv["osc.received"] >= 1
    client.msg("/inst/params")
    replies = client.sync()
    table = [r for r in replies if r.address == "/inst/params/reply"]
    assert [r.args[0] for r in table] == list(params.PARAMS)
    g = params.PARAMS["gain_db"]
    assert table[list(params.PARAMS).index("gain_db")].args == (
        "gain_db", g.min, g.max, g.default, "dB", "lin")
    assert replies[-1] == w.Message("/inst/done", "si", ("/inst/params", len(params.PARAMS)))
    client.msg("/inst/patch/load", "patches/good.toml")
    client.msg("/inst/patch/load", "missing.toml")
    done, fail = client.sync()
    assert done.args == ("/inst/patch/load", "patches/good.toml")
    assert fail.address == "/inst/fail" and fail.args[0] == "/inst/patch/load"
    assert "missing.toml: file not found" in fail.args[1]
    assert sink.take() == []


def test_patch_load_without_loader_sends_command() -> None:
    sink = Sink()
    with OscServer(sink, port=0) as server:
        client = Client(server)
        client.msg("/inst/patch/load", "p.toml")
        (done,) = client.sync()
        assert done.address == "/inst/done"
        assert sink.take() == [C.LoadPatch("p.toml")]


def test_notify_subscription(rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, _ = rig
    client.msg("/inst/notify", 1)
    (done,) = client.sync()
    assert done.args == ("/inst/notify", 1)
    assert server.subscribers == [client.sock.getsockname()]
    server.notify("/inst/latent/moved", 0.25, 0.5)
    assert client.recv() == w.Message("/inst/latent/moved", "ff", (0.25, 0.5))
    client.msg("/inst/notify", False)
    client.sync()
    assert server.subscribers == []


def test_future_bundle_is_held_then_applied(rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    due = time.time() + 1.0
    client.send(w.encode_bundle([w.encode_message("/inst/latent/x", 0.875)],
                                w.unix_to_timetag(due)))
    client.msg("/inst/latent/x", 0.125)  # sent after, applied first
    client.sync()
    deadline = time.time() + WAIT_S
    while len(sink.items) < 2 and time.time() < deadline:
        client.sync()  # the receiver keeps answering while a bundle is held
    items = list(sink.items)
    assert [c for _, c in items] == [C.SetLatent(x=0.125), C.SetLatent(x=0.875)]
    assert items[1][0] >= due  # never applied early
    assert server.counters["scheduled"] == 1


def test_past_bundle_applies_now(rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    client.send(w.encode_bundle([w.encode_message("/inst/gate", True)],
                                w.unix_to_timetag(time.time() - 10)))
    client.sync()
    assert sink.take() == [C.Gate(True)] and server.counters["late"] == 1


def test_burst_of_1000_keeps_order(rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    packets = [w.encode_message("/inst/latent/x", k / 1024) for k in range(1000)]
    for p in packets:
        client.send(p)
    pings = client.sync_retrying()
    xs = [c.x for c in sink.take()]
    overflow = server.counters["overflow"]  # datagrams the kernel dropped on a full buffer
    rcvbuf = server._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # type: ignore[union-attr]
    if rcvbuf >= 2 << 20:  # a big buffer (the default 4 MiB request granted) holds the burst
        assert xs == [k / 1024 for k in range(1000)]  # all of them, in order (exact in float32)
    assert xs == sorted(set(xs))  # whatever the kernel let through is in order
    assert len(xs) + overflow - (pings - 1) == 1000  # and every loss is counted


def test_receiver_survives_a_failing_send() -> None:
    def bad_send(cmd: C.Command) -> bool:
        if isinstance(cmd, C.Gate):
            raise RuntimeError("boom")
        return False  # e.g. a full engine queue

    with OscServer(bad_send, port=0) as server:
        client = Client(server)
        client.msg("/inst/gate", 1)
        client.msg("/inst/bend", 0.5)
        replies = client.sync()
        assert [r.address for r in replies] == ["/inst/fail", "/inst/fail"]
        assert server.counters["internal_error"] == 1 and server.counters["send_failed"] == 1


@pytest.mark.skipif(shutil.which("oscsend") is None, reason="oscsend (liblo-tools) not installed")
def test_oscsend_second_implementation(rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    subprocess.run(["oscsend", "127.0.0.1", str(server.port), "/inst/latent", "ff", "0.25",
                    "0.75"], check=True, timeout=WAIT_S)
    subprocess.run(["oscsend", "127.0.0.1", str(server.port), "/inst/note", "if", "60", "0.5"],
                   check=True, timeout=WAIT_S)
    client.sync()
    assert sink.take() == [C.SetLatent(0.25, 0.75), C.NoteOn(60, 0.5)]


@pytest.mark.skipif(shutil.which("oscdump") is None, reason="oscdump (liblo-tools) not installed")
def test_oscdump_receives_our_messages(rig: tuple[OscServer, Client, Sink]) -> None:
    server, _, _ = rig
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        server.subscribe("127.0.0.1", port)
        deadline = time.time() + WAIT_S
        while not lines and time.time() < deadline:  # until oscdump has bound its port
            server.notify("/inst/pong", 7, 0.5, "hi")
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT_S)
    assert lines and lines[0].split()[-5:] == ["/inst/pong", "ifs", "7", "0.500000", '"hi"']


def test_docs_list_every_address_and_parameter() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "OSC.md").read_text(encoding="utf-8")
    server = OscServer(Sink(), port=0)  # not started
    for address in server._routes:
        if not address.startswith("/inst/param/"):
            assert f"`{address}`" in doc, address
    for name in params.PARAMS:
        assert f"`{name}`" in doc, name


def test_far_future_inner_bundle_is_not_held_forever() -> None:
    sink = Sink()
    server = OscServer(sink, port=0)  # not started: handle_packet runs in this thread
    inner = w.encode_bundle([w.encode_message("/inst/latent/y", 0.5)],
                            w.unix_to_timetag(time.time() + 3e7))  # a year ahead
    outer = w.encode_bundle([w.encode_message("/inst/latent/x", 0.5), inner],
                            w.unix_to_timetag(time.time() + 1.0))
    server.handle_packet(outer, ("127.0.0.1", 9))
    assert server.counters["far_future"] == 1 and server.counters["scheduled"] == 2
    assert all(due < time.time() + 2.0 for due, *_ in server._heap)  # held with the outer one


def test_a_bundle_over_the_cap_applies_its_first_messages_and_fails_once(
        rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    cap = server.max_messages
    xs = [k / 512 for k in range(cap + 44)]
    inner = [w.encode_bundle([w.encode_message("/inst/latent/x", x) for x in part])
             for part in (xs[:200], xs[200:])]  # nested: the cut keeps the order and depth
    client.send(w.encode_bundle(inner))
    replies = client.sync()
    assert [c.x for c in sink.take()] == xs[:cap]
    (fail,) = replies
    assert fail.address == "/inst/fail" and fail.args[0] == "(packet)"
    assert f"more than {cap} messages" in fail.args[1] and "first 256 are applied" in fail.args[1]
    assert server.counters["too_many"] == 1 and server.counters["dropped"] == 1
    client.send(w.encode_bundle([w.encode_message("/inst/latent/y", 0.5)] * cap))  # at the cap
    assert client.sync() == [] and len(sink.take()) == cap


def test_a_bundle_with_broken_sizes_is_still_malformed(
        rig: tuple[OscServer, Client, Sink]) -> None:
    server, client, sink = rig
    el = w.encode_message("/inst/latent/x", 0.5)
    good = bytearray(w.encode_bundle([el] * 300))
    third = 16 + 2 * (4 + len(el))
    good[third:third + 4] = struct.pack(">i", 6)  # not a multiple of 4: the sizes do not add up
    client.send(bytes(good))
    (fail,) = client.sync()
    assert sink.take() == [] and server.counters["malformed"] == 1 and "size" in fail.args[1]


def test_fail_replies_are_rate_limited_per_sender() -> None:
    sink = Sink()
    with OscServer(sink, port=0, fail_replies_per_s=2.0) as server:
        client = Client(server)
        t0 = time.monotonic()
        for _ in range(50):
            client.msg("/inst/latent/x", 7.0)  # out of range
        replies = client.sync()  # the pong is not rate-limited
        elapsed_s = time.monotonic() - t0
        fails = [r for r in replies if r.address == "/inst/fail"]
        assert len(fails) == len(replies) >= 1
        assert len(fails) <= 2 + 2.0 * elapsed_s + 1  # the burst plus what refilled meanwhile
        c = server.counters
        assert c["out_of_range"] == 50 and c["fail_suppressed"] == 50 - len(fails)
        other = Client(server)  # another sender has its own allowance
        other.msg("/inst/latent/x", 7.0)
        assert [r.address for r in other.sync()] == ["/inst/fail"]


def test_fast_path_reads_latents_exactly_like_the_parser() -> None:
    """/inst/latent ,ff and /inst/latent/x ,f skip the parser; inside a bundle they do not."""
    fast, slow = Sink(), Sink()
    a, b = OscServer(fast, port=0), OscServer(slow, port=0)  # not started: direct calls
    values = [0.0, 1.0, -0.0, 0.5, 1e-40, 0.1, 0.999999, float("nan"), 1.0000001, -1e-30,
              float("inf")]
    for x, y in itertools.product(values, values[:4]):
        for m in (w.encode_message("/inst/latent", x, y), w.encode_message("/inst/latent/x", x),
                  w.encode_message("/inst/latent/y", y)):
            a.handle_packet(m, ("127.0.0.1", 9))
            b.handle_packet(w.encode_bundle([m]), ("127.0.0.1", 9))
    assert fast.take() == slow.take()
    ca, cb = a.counters, b.counters
    for key in ("messages", "applied", "dropped", "out_of_range", "non_finite"):
        assert ca[key] == cb[key], key
    assert ca["applied"] > 0 and ca["non_finite"] > 0 and ca["out_of_range"] > 0


def test_patch_load_future_replies_when_done_and_busy_meanwhile() -> None:
    """The loader runs the job on its own thread; the receiver keeps answering meanwhile."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from instrument.control.osc import Busy

    release = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)
    running: list[Future] = []

    def job(path: str) -> None:
        release.wait(WAIT_S)
        if "bad" in path:
            raise PatchError(f"patch {path}: line 2: TOML syntax error; fix the syntax")

    def load(path: str) -> Future:
        if running and not running[-1].done():
            raise Busy(f"busy: loading {running[-1].path!r}; wait for its reply")  # type: ignore[attr-defined]
        f = pool.submit(job, path)
        f.path = path  # type: ignore[attr-defined]
        running.append(f)
        return f

    sink = Sink()
    with OscServer(sink, load_patch=load, port=0) as server:
        client = Client(server)
        client.msg("/inst/patch/load", "slow.toml")
        client.msg("/inst/patch/load", "second.toml")
        (busy,) = client.sync()  # answered while the first load still runs
        assert busy.address == "/inst/fail" and busy.args[0] == "/inst/patch/load"
        assert busy.args[1].startswith("busy") and "slow.toml" in busy.args[1]
        assert server.counters["busy"] == 1
        release.set()
        assert client.recv() == w.Message("/inst/done", "ss", ("/inst/patch/load", "slow.toml"))
        client.msg("/inst/patch/load", "bad.toml")
        fail = client.recv()
        assert fail.address == "/inst/fail" and "TOML syntax error" in fail.args[1]
        assert server.counters["out_of_range"] == 1
    pool.shutdown()


@pytest.mark.jack
def test_session_loads_patches_off_the_receiver_thread(jack_server, random_model_dir, tmp_path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """``instrument play``'s loader: a real Player on JACK, real UDP, real patch files."""
    import argparse

    from instrument.app import Session
    from instrument.errors import InstrumentError

    a = argparse.Namespace(model=str(random_model_dir("pitched")), patch=None, device=None,
                           rate=None, block=256, osc_host="127.0.0.1", osc_port=0, midi=None,
                           no_midi=True, follow=None, follow_latent_only=False, seconds=None)
    try:
        session = Session(a)
    except InstrumentError as e:
        pytest.skip(f"no audio output on JACK ({e})")
    good = tmp_path / "good.toml"
    good.write_text('format = "instrument-patch/1"\n[params]\ngain_db = -20\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('format = "instrument-patch/1"\n[params]\ngain_db = 99\n')
    session.start()
    client = None
    try:
        client = Client(session.osc)
        with caplog.at_level(logging.INFO, logger="instrument"):
            client.msg("/inst/patch/load", str(good))
            done = client.recv()
        assert done == w.Message("/inst/done", "ss", ("/inst/patch/load", str(good)))
        (rec,) = [r for r in caplog.records if r.getMessage().startswith("patch loaded")]
        assert rec.threadName.startswith("patch-load")  # not osc-<port>, not the audio worker
        client.msg("/inst/patch/load", str(bad))
        fail = client.recv()
        assert fail.address == "/inst/fail" and "gain_db" in fail.args[1]
        assert str(session.patch.path) == str(good)  # the good patch stays
        assert session.patch.param("gain_db") == -20.0
    finally:
        if client is not None:
            client.sock.close()
        session.stop()


def test_releases_in_the_refused_tail_of_a_bundle_still_apply(
        rig: tuple[OscServer, Client, Sink]) -> None:
    """A note-off after 1,800 latents (the reviewer's stuck-note bundle) is not lost."""
    server, client, sink = rig
    client.msg("/inst/note", 60, 0.5)
    lat = [w.encode_message("/inst/latent", 0.5, 0.25)] * 1800
    tail = [w.encode_message("/inst/note", 62, 0.8), w.encode_message("/inst/note/off", 60.0),
            w.encode_message("/inst/note", 61, 0), w.encode_message("/inst/gate", False),
            w.encode_message("/inst/gate", True), w.encode_message("/inst/alloff")]
    client.send(w.encode_bundle(lat + [w.encode_bundle(tail[:3])] + tail[3:]))
    (fail,) = client.sync()
    got = sink.take()
    assert got[0] == C.NoteOn(60, 0.5) and got[1:257] == [C.SetLatent(0.5, 0.25)] * 256
    assert got[257:] == [C.NoteOff(60), C.NoteOff(61), C.Gate(False), C.AllNotesOff()]
    assert "the 4 note-offs/all-offs/gate-offs after them" in fail.args[1]
