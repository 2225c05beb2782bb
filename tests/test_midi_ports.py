"""Real MIDI ports: JACK MIDI through mido's rtmidi backend (UNIX_JACK).

The JACK tests need a running JACK server (CI starts a dummy one and exports
JACK_DEFAULT_SERVER); they skip with the reason when none is reachable. The no-backend
tests use a real failing backend (a JACK server name that does not exist, a missing
backend module), no mocks.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from contextlib import contextmanager

import mido
import pytest

from instrument.control.commands import NoteOff, NoteOn, SetLatent
from instrument.control.midi import MidiInput, MidiMapper, list_ports, match_port
from instrument.control.patches import MidiMap
from instrument.errors import DeviceError

JACK = "mido.backends.rtmidi/UNIX_JACK"
_names = itertools.count()


def _jack_reason() -> str | None:
    """None when a JACK server answers, else why not."""
    try:
        import rtmidi

        if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
            return "python-rtmidi was built without JACK support"
        probe = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "instrument-probe")
        probe.delete()
    except Exception as err:  # rtmidi raises SystemError when no server answers
        return f"no JACK server reachable ({err}); start one and export JACK_DEFAULT_SERVER"
    return None


@pytest.fixture(scope="module")
def jack_backend():
    reason = _jack_reason()
    if reason:
        pytest.skip(reason)
    return mido.Backend(JACK, load=True)


def unique(stem: str) -> str:
    return f"{stem}-{os.getpid()}-{next(_names)}"


class Collector:
    """Collects commands from the MIDI thread; wait() blocks until n have arrived."""

    def __init__(self) -> None:
        self.items: list = []
        self._cv = threading.Condition()

    def __call__(self, cmd) -> None:
        with self._cv:
            self.items.append(cmd)
            self._cv.notify_all()

    def wait(self, n: int, timeout_s: float = 5.0) -> list:
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while len(self.items) < n and time.monotonic() < deadline:
                self._cv.wait(deadline - time.monotonic())
            return list(self.items)


def wait_connected(out, inp: MidiInput, timeout_s: float = 5.0) -> None:
    """Send clock probes until one arrives: a fresh JACK connection is live a cycle later.

    Clock messages are filtered by the mapper (counted, no command), so they do not
    disturb what the test then checks.
    """
    deadline = time.monotonic() + timeout_s
    while inp.mapper.clock_filtered == 0:
        if time.monotonic() > deadline:
            pytest.fail(f"no MIDI arrived from {out.name!r} within {timeout_s} s")
        out.send(mido.Message("clock"))
        time.sleep(0.01)


@contextmanager
def connected_input(jack_backend, stem: str, on_command, mapper: MidiMapper | None = None,
                    spell=str):
    """A virtual JACK output and a MidiInput opened on it by ``spell(name)``, connected.

    Yields both; the input is closed (and checked closed) when the block ends.
    """
    name = unique(stem)
    with jack_backend.open_output(name, virtual=True) as out:
        inp = MidiInput(on_command, port_name=spell(name), mapper=mapper, backend=JACK)
        assert inp.open() is True
        try:
            assert name in inp.opened_name
            wait_connected(out, inp)
            yield out, inp
        finally:
            inp.close()
    assert not inp.is_open


@pytest.mark.jack
def test_note_and_cc_sweep_arrive_in_order_by_port_name(jack_backend):
    got = Collector()
    mapper = MidiMapper([MidiMap("note", "play"), MidiMap("cc", "latent.x", number=1)])
    with connected_input(jack_backend, "ctl-out", got, mapper, spell=str.upper) as (out, inp):
        out.send(mido.Message("note_on", note=60, velocity=127))
        for v in range(0, 128, 8):
            out.send(mido.Message("control_change", control=1, value=v))
        out.send(mido.Message("clock"))
        out.send(mido.Message("note_off", note=60))
        want = [NoteOn(60, 1.0), *[SetLatent(x=v / 127) for v in range(0, 128, 8)],
                NoteOff(60)]
        assert got.wait(len(want)) == want
        st = inp.status()
        assert st["open"] and st["mapped"] == len(want) and st["clock_filtered"] >= 2


@pytest.mark.jack
def test_cc14_sweep_over_jack_is_monotonic(jack_backend):
    got = Collector()
    values = list(range(8100, 8300, 7))
    mapper = MidiMapper([MidiMap("cc14", "latent.y", number=1)])
    with connected_input(jack_backend, "cc14-out", got, mapper=mapper) as (out, _):
        for v in values:
            out.send(mido.Message("control_change", control=1, value=v >> 7))
            out.send(mido.Message("control_change", control=33, value=v & 0x7F))
        assert [c.y for c in got.wait(len(values))] == [v / 16383 for v in values]


@pytest.mark.jack
def test_virtual_input_receives_from_a_connecting_output(jack_backend):
    vname = unique("inst-in")
    got = Collector()
    inp = MidiInput(got, virtual_name=vname, backend=JACK)
    assert inp.open()
    try:
        target = match_port(vname, jack_backend.get_output_names())
        with jack_backend.open_output(target) as out:
            wait_connected(out, inp)
            out.send(mido.Message("note_on", note=64, velocity=127))
            assert got.wait(1) == [NoteOn(64, 1.0)]
    finally:
        inp.close()


@pytest.mark.jack
def test_failing_consumer_does_not_stop_midi(jack_backend):
    got = Collector()

    def consumer(cmd):
        if isinstance(cmd, NoteOn) and cmd.note == 1:
            raise RuntimeError("consumer bug")
        got(cmd)

    with connected_input(jack_backend, "err-out", consumer) as (out, inp):
        out.send(mido.Message("note_on", note=1, velocity=100))
        out.send(mido.Message("note_on", note=2, velocity=127))
        assert got.wait(1) == [NoteOn(2, 1.0)]
        assert inp.callback_errors == 1


@pytest.mark.jack
def test_unknown_port_name_lists_the_ports(jack_backend):
    name = unique("listed-out")
    with jack_backend.open_output(name, virtual=True):
        inp = MidiInput(lambda c: None, port_name="no-such-controller", backend=JACK)
        with pytest.raises(DeviceError) as info:
            inp.open()
        assert "no-such-controller" in str(info.value) and name in str(info.value)
        assert MidiInput.try_open(lambda c: None, "no-such-controller", backend=JACK) is None
        ports = list_ports(JACK)
        assert ports["error"] is None and any(name in p for p in ports["inputs"])


def test_match_port_rules():
    names = ["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "MiniLab mkII:MIDI 1", "MiniLab mkII:MIDI 2"]
    assert match_port("nanokontrol2", names) == names[0]
    assert match_port("minilab mkii:midi 2", names) == names[2]
    with pytest.raises(DeviceError, match="matches 'MiniLab mkII:MIDI 1', 'MiniLab mkII:MIDI 2'"):
        match_port("minilab", names)
    with pytest.raises(DeviceError, match="Keystation.*nanoKONTROL2"):
        match_port("Keystation", names)


def test_no_jack_server_means_midi_off_not_a_crash(monkeypatch, caplog):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", unique("no-such-jack-server"))
    caplog.set_level(logging.WARNING, logger="instrument.midi")
    inp = MidiInput(lambda c: None, port_name="anything", backend=JACK)
    assert inp.open() is False
    assert not inp.is_open and "JACK" in inp.off_reason
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("MIDI is off:")
    assert inp.status()["open"] is False
    inp.close()  # harmless when never opened
    ports = list_ports(JACK)
    assert ports["inputs"] == [] and ports["outputs"] == [] and "JACK" in ports["error"]


def test_missing_backend_module_and_env_backend(monkeypatch, caplog):
    monkeypatch.setenv("MIDO_BACKEND", "mido.backends.no_such_backend")
    caplog.set_level(logging.WARNING, logger="instrument.midi")
    assert MidiInput.try_open(lambda c: None, virtual_name="x") is None
    assert "no_such_backend" in caplog.records[-1].getMessage()
    assert "no_such_backend" in list_ports()["error"]
