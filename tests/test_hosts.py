"""The host examples in patches/hosts/ really talk to the instrument (real Pd, real UDP)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from instrument.control.commands import NoteOn, SetLatent
from instrument.control.osc import OscServer

HOSTS = Path(__file__).resolve().parents[1] / "patches" / "hosts"


def test_pd_example_plays_a_note_and_moves_the_latent(tmp_path):
    pd = shutil.which("pd")
    if pd is None:
        pytest.skip("Pure Data is not installed (apt install puredata-core)")
    got: list = []
    with OscServer(got.append, port=0) as server:
        patch = tmp_path / "instrument.pd"
        text = (HOSTS / "instrument.pd").read_text()
        assert "57130" in text
        patch.write_text(text.replace("57130", str(server.port)))
        proc = subprocess.Popen([pd, "-nogui", "-nosound", "-nomidi", "-open", str(patch)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=5)
    notes = [c for c in got if isinstance(c, NoteOn)]
    moves = [c for c in got if isinstance(c, SetLatent)]
    assert notes and notes[0].note == 60 and notes[0].velocity == pytest.approx(0.8, abs=1e-6)
    assert moves and (moves[0].x, moves[0].y) == (0.25, 0.75)


def test_supercollider_example_sends_only_documented_addresses():
    """Every address the example sends (in all its blocks, also those the sclang test below
    does not run) is one the OSC reference documents; runs without sclang."""
    import re

    text = (HOSTS / "instrument.scd").read_text()
    reference = (HOSTS.parents[1] / "docs" / "OSC.md").read_text()
    sent = set(re.findall(r'sendMsg\("(/[^"]+)"', text))
    assert {"/inst/note", "/inst/latent", "/inst/status"} <= sent
    for addr in sent:
        documented = addr if not addr.startswith("/inst/param/") else "/inst/param/<name>"
        assert f"`{documented}`" in reference, addr


def test_pd_receives_the_listeners_coordinates(tmp_path):
    """``instrument listen --file F --send 127.0.0.1:PORT`` streams to a real Pd receiver."""
    import socket
    import sys

    pd = shutil.which("pd")
    if pd is None:
        pytest.skip("Pure Data is not installed (apt install puredata-core)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    patch = tmp_path / "listen_receiver.pd"
    patch.write_text((HOSTS / "listen_receiver.pd").read_text().replace("57120", str(port)))
    proc = subprocess.Popen([pd, "-nogui", "-nosound", "-nomidi", "-stderr", "-open",
                             str(patch)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        time.sleep(1.0)  # let Pd bind its port
        wav = HOSTS.parents[1] / "tests" / "data" / "flute_62.wav"
        r = subprocess.run([sys.executable, "-m", "instrument.cli", "listen", "--file", str(wav),
                            "--send", f"127.0.0.1:{port}", "--seconds", "1.0"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        time.sleep(0.3)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
    lines = [ln for ln in out.splitlines() if ln.startswith("listen:")]
    assert len(lines) > 50, out[-2000:]  # ~190 hops per second of input
    values = [float(v) for v in lines[len(lines) // 2].split()[2:4]]  # "listen: xy X Y ..."
    assert all(0.0 <= v <= 1.0 for v in values), lines[len(lines) // 2]


def _scd_setup_block(text: str) -> str:
    """The first ``( ... )`` block of an .scd file: the lines between a line ``(`` and ``)``."""
    lines = text.splitlines()
    start = lines.index("(")
    end = lines.index(")", start)
    return "\n".join(lines[start + 1:end])


def _scd_line(text: str, prefix: str) -> str:
    """The first line of an .scd file that starts with ``prefix``."""
    return next(ln for ln in text.splitlines() if ln.startswith(prefix))


def test_supercollider_example_plays_a_note_and_gets_the_status(tmp_path):
    """Real sclang runs the example's setup block, note line and latent line against a real
    OscServer on UDP; the example's own OSCdef prints the /inst/status/reply it gets back."""
    sclang = shutil.which("sclang")
    if sclang is None:
        pytest.skip("SuperCollider's sclang is not installed (apt install supercollider-language)")
    text = (HOSTS / "instrument.scd").read_text()
    setup = _scd_setup_block(text)
    assert "57130" in setup and '"/inst/status"' in setup
    note = _scd_line(text, '~inst.sendMsg("/inst/note", ')
    move = _scd_line(text, '~inst.sendMsg("/inst/latent", ')
    got: list = []
    with OscServer(got.append, status=lambda: {"engine": "sclang_test", "voices": 3},
                   port=0) as server:
        # One file, run as one chunk: the reply is handled after the chunk, so both lines
        # are sent before the exit below; the fallback exit (1) ends sclang if no reply comes.
        script = tmp_path / "instrument_test.scd"
        script.write_text("\n".join([
            "(", setup.replace("57130", str(server.port)), ");",
            note, move,
            "OSCdef(\\testDone, { AppClock.sched(0.2, { 0.exit }) }, '/inst/status/reply');",
            "AppClock.sched(10, { \"no status reply\".postln; 1.exit });",
        ]) + "\n")
        home, runtime = tmp_path / "home", tmp_path / "xdg"
        home.mkdir()
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
               "QT_QPA_PLATFORM": "offscreen", "QTWEBENGINE_DISABLE_SANDBOX": "1"}
        r = subprocess.run([sclang, str(script)], capture_output=True, text=True, env=env,
                           timeout=60, stdin=subprocess.DEVNULL)
        counters = server.counters
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "instrument status (/inst/status/reply):" in out, out[-3000:]
    assert "  engine: sclang_test" in out and "  voices: 3" in out, out[-3000:]
    assert "instrument refused" not in out, out[-3000:]
    assert counters["dropped"] == 0, counters
    notes = [c for c in got if isinstance(c, NoteOn)]
    moves = [c for c in got if isinstance(c, SetLatent)]
    assert notes and notes[0].note == 60 and notes[0].velocity == pytest.approx(0.8, abs=1e-6)
    assert moves and (moves[0].x, moves[0].y) == pytest.approx((0.25, 0.75))
