"""``instrument play`` end to end on a JACK dummy server: OSC and MIDI in, sound out.

Real parts only: a PortAudio output (the instrument), a PortAudio input in the test that
records it through ``jack_connect``, UDP packets on 127.0.0.1, and a JACK MIDI port.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time

import mido
import numpy as np
import pytest

from instrument.app import Session
from instrument.control import oscwire

JACK_MIDI = "mido.backends.rtmidi/UNIX_JACK"


def _ports() -> list[str]:
    r = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10)
    return [p.strip() for p in r.stdout.splitlines() if p.strip()]


class Recorder:
    """A PortAudio input stream that keeps (arrival time, block) pairs."""

    def __init__(self, sample_rate: int):
        import sounddevice as sd

        self.blocks: list[tuple[float, np.ndarray]] = []
        before = set(_ports())
        self.stream = sd.InputStream(samplerate=sample_rate, channels=1, dtype="float32",
                                     callback=self._cb)
        self.stream.start()
        self.port = next(p for p in _ports() if p not in before and ":in" in p)
        for p in _ports():
            if p.startswith("system:capture"):
                subprocess.run(["jack_disconnect", p, self.port], capture_output=True)

    def _cb(self, indata, frames, time_info, status) -> None:
        self.blocks.append((time.monotonic(), indata[:, 0].copy()))

    def between(self, t0: float, t1: float) -> np.ndarray:
        parts = [b for t, b in self.blocks if t0 <= t < t1]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


def _args(model: str, midi: str | None) -> argparse.Namespace:
    return argparse.Namespace(model=model, patch=None, device=None, rate=None, block=256,
                              osc_host="127.0.0.1", osc_port=0, midi=midi, no_midi=midi is None,
                              follow=None, follow_latent_only=False, seconds=None)


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20)


def _spectrum_db(x: np.ndarray) -> np.ndarray:
    n = 4096
    frames = [x[i:i + n] * np.hanning(n) for i in range(0, len(x) - n, n // 2)]
    return 10 * np.log10(np.mean([np.abs(np.fft.rfft(f)) ** 2 for f in frames], 0) + 1e-12)


@pytest.mark.jack
def test_play_answers_osc_and_midi_with_sound(jack_server, random_model_dir):
    try:
        backend = mido.Backend(JACK_MIDI, load=True)
        ctl = backend.open_output(f"test-ctl-{os.getpid()}", virtual=True)
    except Exception as e:  # rtmidi raises SystemError when it cannot reach JACK
        pytest.skip(f"no JACK MIDI ({e})")
    session = Session(_args(str(random_model_dir("pitched")), ctl.name))
    rec = Recorder(session.player.sample_rate)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    try:
        session.start()
        assert session.midi is not None, "the MIDI input did not open"
        outs = [p for p in _ports() if ":out" in p and not p.startswith("system")]
        subprocess.run(["jack_connect", outs[0], rec.port], check=True, timeout=10)
        dest = ("127.0.0.1", session.osc.port)
        time.sleep(0.6)
        t_quiet = time.monotonic()
        time.sleep(0.5)
        # OSC: a note makes sound; status is answered to the sender
        t_osc = time.monotonic()
        sock.sendto(oscwire.encode_message("/inst/note", 69, 0.9), dest)
        time.sleep(0.8)
        sock.sendto(oscwire.encode_message("/inst/status"), dest)
        reply = oscwire.parse_packet(sock.recv(65536))
        # subscribe: a MIDI CC (not OSC) moving the latent is reported to us
        sock.sendto(oscwire.encode_message("/inst/notify", 1), dest)
        done = oscwire.parse_packet(sock.recv(65536))
        sock.sendto(oscwire.encode_message("/inst/note/off", 69.0), dest)
        time.sleep(0.8)  # release
        # MIDI: note-on, then a CC1 sweep (latent.x in the default patch) changes the sound
        t_midi = time.monotonic()
        ctl.send(mido.Message("control_change", control=1, value=0))
        ctl.send(mido.Message("note_on", note=57, velocity=110))
        time.sleep(0.8)
        t_sweep = time.monotonic()
        for v in range(0, 128, 4):
            ctl.send(mido.Message("control_change", control=1, value=v))
            time.sleep(0.01)
        ctl.send(mido.Message("control_change", control=1, value=127))
        time.sleep(0.3)
        events = []
        sock.settimeout(0.2)
        try:
            while True:
                events.append(oscwire.parse_packet(sock.recv(65536)))
        except TimeoutError:
            pass
        t_end_a = time.monotonic()
        time.sleep(0.8)
        t_end = time.monotonic()
        status = session.status()
    finally:
        session.stop()
        rec.close()
        ctl.close()
        sock.close()
    assert reply.address == "/inst/status/reply"
    assert done.address == "/inst/done" and done.args[0] == "/inst/notify"
    moves = [e.args for e in events if e.address == "/inst/latent/reply"]
    assert moves and moves[-1][0] > 0.9, moves[-5:]  # CC1 127 -> latent x = 1
    assert any(e.address == "/inst/voices/reply" for e in events)
    kv = dict(zip(reply.args[::2], reply.args[1::2], strict=False))
    assert kv["sample_rate"] == session.player.sample_rate and kv["model"]
    quiet = rec.between(t_quiet, t_osc)
    osc_note = rec.between(t_osc + 0.3, t_osc + 0.8)
    assert _rms_db(quiet) < -80, "sound before any note"
    assert _rms_db(osc_note) > -40, "no sound after /inst/note"
    before = rec.between(t_midi + 0.2, t_sweep)
    after = rec.between(t_end_a, t_end)
    assert _rms_db(before) > -40, "no sound after a MIDI note-on"
    assert _rms_db(after) > -40
    diff = _spectrum_db(before) - _spectrum_db(after)
    band = slice(20, 1000)  # ~230 Hz .. 11.7 kHz
    assert np.sqrt(np.mean(diff[band] ** 2)) > 2.0, "the CC sweep did not change the sound"
    assert status["worker_error"] is None and status["dropped"] == 0
