"""TOML patches: shipped patches load; every kind of mistake names file, key, value, range."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import mido
import pytest

from instrument.control.commands import NoteOff, NoteOn, SetLatent, SetParam
from instrument.control.midi import MidiMapper
from instrument.control.patches import MAX_PATCH_BYTES, Patch, load_patch, parse_patch
from instrument.errors import PatchError
from instrument.params import PARAMS

PATCHES = Path(__file__).parent.parent / "patches"
HEAD = 'format = "instrument-patch/1"\n'


@pytest.mark.parametrize("name", ["default", "touchosc", "nanokontrol2"])
def test_shipped_patches_load(name):
    p = load_patch(PATCHES / f"{name}.toml")
    assert p.midi or p.osc
    cmds = p.initial_commands()
    assert isinstance(cmds[-1], SetLatent)
    assert {c.name for c in cmds if isinstance(c, SetParam)} == \
        set(PARAMS) - {"latent_x", "latent_y"}


def test_every_toml_in_patches_loads():
    files = sorted(PATCHES.glob("*.toml"))
    assert len(files) >= 3
    for f in files:
        load_patch(f)


def test_default_file_equals_builtin_default():
    assert dataclasses.replace(load_patch(PATCHES / "default.toml"), path=None) == Patch.default()


def test_touchosc_xy_alias():
    [xy] = [a for a in load_patch(PATCHES / "touchosc.toml").osc if a.address == "/1/xy"]
    assert xy.args == ("latent.y", "latent.x") and xy.invert == (False, True)


def test_initial_commands_carry_patch_values_and_reset_the_rest():
    p = parse_patch(HEAD + "[latent]\nx = 0.25\ny = 0.75\nglide_ms = 100\n"
                    "[params]\ngain_db = -12\n[voices]\nvoices = 4\nrelease_ms = 900\n")
    cmds = {c.name: c.value for c in p.initial_commands() if isinstance(c, SetParam)}
    assert cmds["gain_db"] == -12 and cmds["glide_ms"] == 100 and cmds["voices"] == 4
    assert cmds["release_ms"] == 900 and cmds["noise_db"] == PARAMS["noise_db"].default
    assert p.initial_commands()[-1] == SetLatent(0.25, 0.75)


def test_midi_entries_parse():
    p = parse_patch(HEAD + """
[[midi]]
cc14 = 1
target = "latent.x"
[[midi]]
nrpn = 5
target = "param.gain_db"
channel = 3
invert = true
deadband = 0.02
smooth_ms = 30
[[midi]]
note = [36, 47]
target = "latent.y"
""")
    a, b, c = p.midi
    assert (a.kind, a.number, a.target) == ("cc14", 1, "latent.x")
    assert (b.kind, b.number, b.channel, b.invert, b.deadband, b.smooth_ms) == \
        ("nrpn", 5, 3, True, 0.02, 30.0)
    assert (c.kind, c.note_lo, c.note_hi, c.target) == ("note", 36, 47, "latent.y")


BAD = [
    # (patch body, key named, value named, allowed-range fragment)
    ("[params]\ngain_db = 40\n", "params.gain_db", "40", "[-60, 12] dB"),
    ("[params]\ngain_dB = -3\n", "params.gain_dB", "gain_dB", "gain_db"),
    ("[voices]\nvoices = 0\n", "voices.voices", "0", "[1, 16]"),
    ("[voices]\ndrone_hz = 100\n", "voices.drone_hz", "drone_hz", "attack_ms"),
    ("[latent]\nx = 1.5\n", "latent.x", "1.5", "[0, 1]"),
    ("[latent]\nz = 0.5\n", "latent.z", "z", "glide_ms"),
    ("[params]\nsustain = \"high\"\n", "params.sustain", "high", "[0, 1]"),
    ("colour = 1\n", "colour", "colour", "midi"),
    ("[[midi]]\ncc = 1\ntarget = \"latent.x\"\n[[midi]]\ncc = 2\ntarget = \"latent.q\"\n",
     "midi[1].target", "latent.q", "latent.y"),
    ("[[midi]]\ncc = 130\ntarget = \"latent.x\"\n", "midi[0].cc", "130", "[0, 119]"),
    ("[[midi]]\ncc = 99\ntarget = \"latent.x\"\n", "midi[0].cc", "99", "NRPN"),
    ("[[midi]]\ncc14 = 40\ntarget = \"latent.x\"\n", "midi[0].cc14", "40", "[0, 31]"),
    ("[[midi]]\nnrpn = 20000\ntarget = \"latent.x\"\n", "midi[0].nrpn", "20000", "16383"),
    ("[[midi]]\ncc = 1\n", "midi[0].target", "None", "latent.x"),
    ("[[midi]]\ncc = 1\nnote = \"all\"\ntarget = \"latent.x\"\n", "midi[0]", "cc", "exactly one"),
    ("[[midi]]\ncc = 1\ntarget = \"latent.x\"\nchannel = 0\n", "midi[0].channel", "0", "[1, 16]"),
    ("[[midi]]\ncc = 1\ntarget = \"latent.x\"\ndeadband = 0.9\n", "midi[0].deadband", "0.9",
     "[0, 0.5]"),
    ("[[midi]]\ncc = 1\ntarget = \"latent.x\"\nsmooth_ms = -1\n", "midi[0].smooth_ms", "-1",
     "[0, 5000] ms"),
    ("[[midi]]\ncc = 1\ntarget = \"latent.x\"\ninvert = \"yes\"\n", "midi[0].invert", "yes",
     "true or false"),
    ("[[midi]]\nnote = [60, 40]\n", "midi[0].note", "60", "lo <= hi"),
    ("[[midi]]\nnote = \"some\"\n", "midi[0].note", "some", '"all"'),
    ("[[midi]]\ncc14 = 1\ntarget = \"latent.x\"\n[[midi]]\ncc = 33\ntarget = \"latent.y\"\n",
     "midi[1].cc", "33", "cc14"),
    ("[[midi]]\ncc = 1\ntarget = \"latent.x\"\nspeed = 3\n", "midi[0].speed", "speed", "smooth_ms"),
    ("[[osc]]\naddress = \"1/xy\"\nargs = [\"latent.x\"]\n", "osc[0].address", "1/xy", "'/'"),
    ("[[osc]]\naddress = \"/1/xy\"\nargs = [\"latent.x\", \"pan\"]\n", "osc[0].args[1]", "pan",
     "latent.y"),
    ("[[osc]]\naddress = \"/1/xy\"\nargs = [\"latent.x\", \"latent.y\"]\ninvert = [true]\n",
     "osc[0].invert", "True", "2 booleans"),
    ("[[osc]]\naddress = \"/a\"\nargs = [\"gate\"]\n"
     "[[osc]]\naddress = \"/a\"\nargs = [\"freeze\"]\n",
     "osc[1].address", "/a", "once"),
]


@pytest.mark.parametrize("body,key,value,allowed", BAD)
def test_bad_patch_names_file_key_value_and_range(tmp_path, body, key, value, allowed):
    f = tmp_path / "bad.toml"
    f.write_text(HEAD + body)
    with pytest.raises(PatchError) as info:
        load_patch(f)
    msg = str(info.value)
    assert str(f) in msg
    assert repr(key) in msg
    assert value in msg
    assert allowed in msg
    assert "; " in msg  # the fix follows the allowed range


def test_missing_or_wrong_format(tmp_path):
    f = tmp_path / "old.toml"
    f.write_text('format = "instrument-patch/0"\n')
    with pytest.raises(PatchError, match=r"format.*instrument-patch/0.*instrument-patch/1"):
        load_patch(f)
    f.write_text("[params]\ngain_db = -3\n")
    with pytest.raises(PatchError, match=r"'format': got None"):
        load_patch(f)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text(HEAD + "[params]\ngain_db = = 3\n")
    with pytest.raises(PatchError) as info:
        load_patch(f)
    assert f"{f}: line 3" in str(info.value)
    assert "syntax" in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(PatchError, match=r"nope\.toml.*check the path"):
        load_patch(tmp_path / "nope.toml")
    f = tmp_path / "latin1.toml"
    f.write_bytes(HEAD.encode() + b"model = \"caf\xe9\"\n")
    with pytest.raises(PatchError, match=r"latin1\.toml.*0xe9.*UTF-8"):
        load_patch(f)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this system")
def test_device_refused_unread():
    with pytest.raises(PatchError, match=r"/dev/zero.*character device.*regular file"):
        load_patch("/dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    with pytest.raises(PatchError, match=r"pipe\.toml.*FIFO.*regular file"):
        load_patch(fifo)


def test_folder_refused(tmp_path):
    with pytest.raises(PatchError, match=r"folder.*regular file"):
        load_patch(tmp_path)


def test_file_over_the_size_limit_refused(tmp_path):
    f = tmp_path / "huge.toml"
    f.write_bytes(HEAD.encode() + b"#" * (2 * MAX_PATCH_BYTES))
    with pytest.raises(PatchError) as info:
        load_patch(f)
    msg = str(info.value)
    assert "huge.toml" in msg and str(f.stat().st_size) in msg and str(MAX_PATCH_BYTES) in msg


def test_file_at_the_size_limit_loads(tmp_path):
    f = tmp_path / "padded.toml"
    body = HEAD.encode() + b"\n"
    f.write_bytes(body + b"#" * (MAX_PATCH_BYTES - len(body)))
    assert f.stat().st_size == MAX_PATCH_BYTES
    assert load_patch(f).path == str(f)


@pytest.mark.parametrize("name", ["default", "touchosc", "nanokontrol2"])
def test_shipped_osc_aliases_are_accepted_by_the_osc_server(name):
    from instrument.control.osc import OscServer

    server = OscServer(lambda cmd: True, port=0)  # not started: add_alias only checks
    for a in load_patch(PATCHES / f"{name}.toml").osc:
        alias = server.add_alias(a.address, list(a.args), list(a.invert), a.swap)
        assert alias.targets == a.args
    assert set(server.aliases) == {a.address for a in load_patch(PATCHES / f"{name}.toml").osc}


def test_patch_without_midi_key_keeps_the_default_map(tmp_path, caplog):
    """A minimal patch (no [[midi]]) must not strip the keys and the sustain pedal."""
    f = tmp_path / "minimal.toml"
    f.write_text(HEAD + "[latent]\nx = 0.3\n")
    caplog.set_level(logging.INFO, logger="instrument.patches")
    p = load_patch(f)
    assert p.midi == Patch.default().midi
    lines = [r.getMessage() for r in caplog.records if r.name == "instrument.patches"]
    assert lines == [f"patch {f} has no [[midi]]: using the default MIDI map"]
    m = MidiMapper(p.midi)
    m.map(mido.Message("control_change", control=64, value=127), now_s=0.0)
    m.map(mido.Message("note_on", note=60, velocity=100), now_s=0.0)
    assert m.map(mido.Message("note_off", note=60), now_s=0.0) == []  # the pedal holds it
    assert m.map(mido.Message("control_change", control=64, value=0), now_s=0.0) == \
        [NoteOff(60)]


def test_explicit_empty_midi_means_unmapped(caplog):
    caplog.set_level(logging.INFO, logger="instrument.patches")
    p = parse_patch(HEAD + "midi = []\n", "bare.toml")
    assert p.midi == ()
    [line] = [r.getMessage() for r in caplog.records if r.name == "instrument.patches"]
    assert line.startswith("patch bare.toml has midi = []: MIDI input is unmapped")
    m = MidiMapper(p.midi)
    assert m.map(mido.Message("control_change", control=1, value=127), now_s=0.0) == []
    assert m.map(mido.Message("control_change", control=64, value=127), now_s=0.0) == []
    assert m.map(mido.Message("note_on", note=60, velocity=127), now_s=0.0) == [NoteOn(60, 1.0)]
    assert m.map(mido.Message("note_off", note=60), now_s=0.0) == [NoteOff(60)]  # no pedal


def test_midi_key_must_be_a_list():
    with pytest.raises(PatchError, match=r"'midi'.*array of tables"):
        parse_patch(HEAD + 'midi = "none"\n')
