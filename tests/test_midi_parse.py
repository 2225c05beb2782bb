"""Raw MIDI bytes -> messages (MidiByteParser) -> commands (MidiMapper).

Every file in tests/cases/midi (copies of the shared hostile-input cases) is checked for
the behaviour listed in the cases README.
"""

from __future__ import annotations

from pathlib import Path

import mido
import pytest

from instrument.control.commands import (
    AllNotesOff,
    FreezeLatent,
    NoteOff,
    NoteOn,
    PitchBend,
    SetLatent,
    SetParam,
)
from instrument.control.midi import MidiInput, MidiMapper, bend_value
from instrument.control.midiparse import MidiByteParser
from instrument.control.patches import MidiMap
from instrument.errors import DeviceError
from instrument.params import PARAMS

CASES = Path(__file__).parent / "cases" / "midi"


def case(name: str) -> bytes:
    return (CASES / f"{name}.bin").read_bytes()


def parse(data: bytes, **kw) -> list[mido.Message]:
    return MidiByteParser(**kw).feed(data)


# -- parser: the case files ------------------------------------------------------------
def test_all_case_files_are_covered():
    tested = {"running_status_notes", "noteon_vel0_as_off", "cc14_msb_then_lsb",
              "nrpn_data_msb_then_lsb", "pitchbend_min_center_max", "cc_jitter_116_117",
              "clock_flood_2400", "sysex_unterminated"}
    assert {p.stem for p in CASES.glob("*.bin")} == tested


def test_running_status_gives_three_ons_then_three_offs():
    msgs = parse(case("running_status_notes"))
    assert [(m.type, m.note) for m in msgs] == [
        ("note_on", 60), ("note_on", 62), ("note_on", 64),
        ("note_off", 60), ("note_off", 62), ("note_off", 64)]
    assert all(m.velocity == 100 for m in msgs[:3])


def test_noteon_velocity_zero_is_note_off():
    msgs = parse(case("noteon_vel0_as_off"))
    assert [m.type for m in msgs] == ["note_on", "note_off"]
    assert msgs[1].note == 60


def test_pitchbend_min_centre_max_exact():
    msgs = parse(case("pitchbend_min_center_max"))
    assert [m.pitch for m in msgs] == [-8192, 0, 8191]
    cmds = MidiMapper([]).feed_bytes(case("pitchbend_min_center_max"))
    assert cmds == [PitchBend(-1.0), PitchBend(0.0), PitchBend(1.0)]
    assert cmds[1].value == 0.0 and cmds[0].value == -1.0 and cmds[2].value == 1.0


def test_clock_flood_filtered_and_queues_nothing():
    p = MidiByteParser()
    flood = case("clock_flood_2400")
    assert p.feed(flood) == []
    assert p.clock_filtered == 2400
    assert p.realtime_filtered == len(flood)  # FA start, 2400 clocks, FC stop
    assert p.pending_bytes == 0
    # A note sent right after (or inside) the flood comes out of the same feed call.
    msgs = p.feed(flood[:100] + bytes([0x90, 0xF8, 0x3C, 0xF8, 0x64]) + flood[:100])
    assert [(m.type, m.note, m.velocity) for m in msgs] == [("note_on", 60, 100)]


def test_clock_flood_counted_by_mapper():
    m = MidiMapper([])
    assert m.feed_bytes(case("clock_flood_2400")) == []
    assert m.clock_filtered == 2402
    assert m.feed_bytes(bytes([0x90, 0x40, 0x50])) == [NoteOn(64, 80 / 127)]


def test_sysex_unterminated_is_bounded_and_later_messages_work():
    p = MidiByteParser(max_sysex_bytes=64)
    data = case("sysex_unterminated")
    assert p.feed(data) == []
    assert p.sysex_dropped == 1
    assert p.pending_bytes == 0  # the bound was hit: nothing kept
    msgs = p.feed(bytes([0x90, 0x3C, 0x64]))
    assert [(m.type, m.note) for m in msgs] == [("note_on", 60)]


def test_sysex_unterminated_cut_short_by_a_status_byte():
    p = MidiByteParser()  # bound 4096: the whole case fits, so it waits for F7
    assert p.feed(case("sysex_unterminated")) == []
    assert 0 < p.pending_bytes <= p.max_sysex_bytes
    msgs = p.feed(bytes([0xB0, 0x01, 0x40]))
    assert p.sysex_dropped == 1
    assert [(m.type, m.control, m.value) for m in msgs] == [("control_change", 1, 64)]
    assert p.pending_bytes == 0


def test_terminated_sysex_is_returned_with_clock_inside():
    msgs = parse(bytes([0xF0, 0x7D, 0x01, 0xF8, 0x02, 0xF7, 0x80, 0x3C, 0x00]))
    assert msgs[0].type == "sysex" and msgs[0].data == (0x7D, 0x01, 0x02)
    assert msgs[1].type == "note_off"


def test_stray_data_bytes_are_counted_and_dropped():
    p = MidiByteParser()
    msgs = p.feed(bytes([0x3C, 0x64, 0xF7, 0x90, 0x3C, 0x64]))
    assert [m.type for m in msgs] == ["note_on"]
    assert p.stray_bytes == 3


def test_system_common_cancels_running_status():
    p = MidiByteParser()
    msgs = p.feed(bytes([0x90, 0x3C, 0x64, 0xF3, 0x05, 0x3E, 0x64]))
    assert [m.type for m in msgs] == ["note_on", "song_select"]
    assert p.stray_bytes == 2  # 3E 64 have no status any more


def test_any_chunking_gives_the_same_messages():
    data = b"".join(case(n) for n in ("running_status_notes", "clock_flood_2400",
                                      "nrpn_data_msb_then_lsb", "pitchbend_min_center_max"))
    whole = parse(data)
    p = MidiByteParser()
    pieces = [m for i in range(0, len(data), 7) for m in p.feed(data[i:i + 7])]
    assert pieces == whole and len(whole) == 13


# -- mapper: the case files ------------------------------------------------------------
def test_running_status_notes_become_commands_in_order():
    cmds = MidiMapper().feed_bytes(case("running_status_notes"))
    v = 100 / 127
    assert cmds == [NoteOn(60, v), NoteOn(62, v), NoteOn(64, v),
                    NoteOff(60), NoteOff(62), NoteOff(64)]


def test_cc14_case_one_value_per_pair():
    m = MidiMapper([MidiMap("cc14", "latent.x", number=1)])
    cmds = m.feed_bytes(case("cc14_msb_then_lsb"), now_s=0.0)
    # MSB 64 + LSB 0 -> 8192, then a lone LSB 127 (fine adjustment) -> 8319.
    assert cmds == [SetLatent(x=8192 / 16383), SetLatent(x=8319 / 16383)]


def _cc14_sweep(values14: list[int]) -> bytes:
    out = bytearray()
    for v in values14:
        out += bytes([0xB0, 1, v >> 7, 0xB0, 33, v & 0x7F])
    return bytes(out)


@pytest.mark.parametrize("direction", [1, -1])
def test_cc14_sweep_is_monotonic_across_msb_steps(direction):
    values = list(range(8000, 8400, 3))[::direction]  # crosses MSB 62->63->64->65
    m = MidiMapper([MidiMap("cc14", "latent.x", number=1)])
    xs = [c.x for c in m.feed_bytes(_cc14_sweep(values), now_s=0.0)]
    assert xs == [v / 16383 for v in values]  # exactly one value per pair, none in between
    steps = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert all(s * direction > 0 for s in steps)


def test_cc14_msb_alone_is_used_after_the_pair_timeout():
    m = MidiMapper([MidiMap("cc14", "latent.x", number=1)])
    assert m.map(mido.Message("control_change", control=1, value=32), now_s=0.0) == []
    assert m.tick(now_s=0.001) == []  # still waiting for the LSB
    assert m.tick(now_s=0.1) == [SetLatent(x=(32 << 7) / 16383)]


def test_nrpn_case_sets_parameter_5_to_8192():
    m = MidiMapper([MidiMap("nrpn", "param.gain_db", number=5),
                    MidiMap("nrpn", "latent.y", number=6)])
    cmds = m.feed_bytes(case("nrpn_data_msb_then_lsb"), now_s=0.0)
    spec = PARAMS["gain_db"]
    assert m.nrpn_selected(1) == 5
    assert cmds == [SetParam("gain_db", spec.from_norm(8192 / 16383))]


def test_nrpn_data_lsb_alone_fine_tunes_and_other_params_are_ignored():
    m = MidiMapper([MidiMap("nrpn", "latent.x", number=5)])
    m.feed_bytes(case("nrpn_data_msb_then_lsb"), now_s=0.0)
    assert m.map(mido.Message("control_change", control=38, value=1), now_s=0) == \
        [SetLatent(x=8193 / 16383)]
    m.feed_bytes(bytes([0xB0, 99, 0, 0xB0, 98, 7, 0xB0, 6, 10, 0xB0, 38, 0]), now_s=0.0)
    assert m.nrpn_selected(1) == 7
    assert m.ignored >= 4


def test_rpn0_sets_bend_range():
    m = MidiMapper([])
    cmds = m.feed_bytes(bytes([0xB0, 101, 0, 0xB0, 100, 0, 0xB0, 6, 12, 0xB0, 38, 0]))
    assert cmds == [SetParam("bend_range_st", 12.0)]


def test_cc_jitter_deadband_holds_latent_still():
    m = MidiMapper([MidiMap("cc", "latent.x", number=16, deadband=0.01)])
    cmds = m.feed_bytes(case("cc_jitter_116_117"), now_s=0.0)
    assert cmds == [SetLatent(x=116 / 127)]  # the first reading only; 400 messages in
    # ... and a real move still gets through, up to the exact end of travel.
    sweep = b"".join(bytes([0xB0, 16, v]) for v in range(118, 128))
    xs = [c.x for c in m.feed_bytes(sweep, now_s=0.0)]
    assert xs == [v / 127 for v in range(118, 128)]


def test_cc_jitter_without_deadband_flickers():
    m = MidiMapper([MidiMap("cc", "latent.x", number=16)])
    assert len(m.feed_bytes(case("cc_jitter_116_117"), now_s=0.0)) == 400


def test_cc_jitter_with_smoothing_and_deadband_is_still():
    m = MidiMapper([MidiMap("cc", "latent.x", number=16, deadband=0.01, smooth_ms=20)])
    data = case("cc_jitter_116_117")
    out = []
    for i in range(0, len(data), 3):
        out += m.feed_bytes(data[i:i + 3], now_s=i * 1e-3)
        out += m.tick(now_s=i * 1e-3 + 5e-4)
    assert out == [SetLatent(x=116 / 127)]


def test_smoothing_glides_and_settles_on_the_goal():
    m = MidiMapper([MidiMap("cc", "latent.x", number=1, smooth_ms=10)])
    m.map(mido.Message("control_change", control=1, value=0), now_s=0.0)
    assert m.map(mido.Message("control_change", control=1, value=127), now_s=0.0) == []
    xs = []
    for k in range(1, 200):
        xs += [c.x for c in m.tick(now_s=k * 0.001)]
    assert 0 < xs[0] < 0.2  # after 1 ms of a 10 ms glide
    assert all(b > a for a, b in zip(xs, xs[1:], strict=False))
    assert xs[-1] == 1.0
    assert m.tick(now_s=1.0) == []  # settled: nothing more


# -- mapper: other behaviour -----------------------------------------------------------
def test_pitch_bend_scaling_exact_and_monotonic():
    assert (bend_value(-8192), bend_value(0), bend_value(8191)) == (-1.0, 0.0, 1.0)
    vals = [bend_value(p) for p in range(-8192, 8192)]
    assert all(b > a for a, b in zip(vals, vals[1:], strict=False))


def test_all_notes_off_controllers():
    m = MidiMapper([])
    for cc in (123, 120):
        assert m.map(mido.Message("control_change", control=cc, value=0)) == [AllNotesOff()]


def test_sustain_pedal_holds_note_offs():
    m = MidiMapper()  # default map: CC 64 is the sustain pedal
    send = m.map
    send(mido.Message("note_on", note=60, velocity=64))
    send(mido.Message("control_change", control=64, value=127))
    assert send(mido.Message("note_off", note=60)) == []
    send(mido.Message("note_on", note=62, velocity=64))
    send(mido.Message("note_on", note=62, velocity=0))
    assert send(mido.Message("control_change", control=64, value=0)) == [NoteOff(60),
                                                                        NoteOff(62)]


def test_param_targets_use_the_warp_and_invert():
    m = MidiMapper([MidiMap("cc", "param.attack_ms", number=73),
                    MidiMap("cc", "latent.y", number=74, invert=True)])
    [cmd] = m.map(mido.Message("control_change", control=73, value=127))
    assert cmd == SetParam("attack_ms", PARAMS["attack_ms"].max)
    [cmd] = m.map(mido.Message("control_change", control=73, value=0))
    assert cmd == SetParam("attack_ms", PARAMS["attack_ms"].min)
    assert m.map(mido.Message("control_change", control=74, value=127)) == [SetLatent(y=0.0)]


def test_channel_filters_and_switch_targets():
    m = MidiMapper([MidiMap("cc", "freeze", number=46, channel=2), MidiMap("note", "play")],
                   channel=2)
    assert m.map(mido.Message("note_on", channel=0, note=60, velocity=9)) == []
    assert m.map(mido.Message("note_on", channel=1, note=60, velocity=127)) == [NoteOn(60, 1.0)]
    assert m.map(mido.Message("control_change", channel=1, control=46, value=127)) == \
        [FreezeLatent(True)]
    with pytest.raises(DeviceError, match="1..16"):
        MidiMapper([], channel=17)


def test_note_ranges_split_the_keyboard():
    m = MidiMapper([MidiMap("note", "play", note_lo=48, note_hi=127),
                    MidiMap("note", "latent.x", note_lo=36, note_hi=47)])
    assert m.map(mido.Message("note_on", note=36, velocity=100)) == [SetLatent(x=0.0)]
    assert m.map(mido.Message("note_on", note=47, velocity=100)) == [SetLatent(x=1.0)]
    assert m.map(mido.Message("note_on", note=60, velocity=127)) == [NoteOn(60, 1.0)]
    assert m.map(mido.Message("note_off", note=36)) == []


def test_counters():
    m = MidiMapper([MidiMap("cc", "latent.x", number=1)])
    m.map(mido.Message("clock"))
    m.map(mido.Message("control_change", control=1, value=5))
    m.map(mido.Message("control_change", control=2, value=5))
    m.map(mido.Message("aftertouch", value=5))
    assert m.status() == {"received": 4, "mapped": 1, "ignored": 2, "clock_filtered": 1,
                          "commands": 1}


# -- mapper: two channels on one voice pool (reference counting) ------------------------
def on(ch: int, note: int, vel: int = 100) -> bytes:
    """Note-on bytes; ``ch`` is 1..16 as printed on controllers."""
    return bytes([0x90 | (ch - 1), note, vel])


def off(ch: int, note: int) -> bytes:
    return bytes([0x80 | (ch - 1), note, 0])


def pedal(ch: int, down: bool) -> bytes:
    return bytes([0xB0 | (ch - 1), 64, 127 if down else 0])


def test_note_off_on_one_channel_keeps_the_same_note_on_another():
    m = MidiMapper()
    assert m.feed_bytes(on(1, 62) + on(2, 62)) == [NoteOn(62, 100 / 127)] * 2
    assert m.held_notes() == {62: (1, 2)}
    assert m.feed_bytes(off(1, 62)) == []  # channel 2 still holds 62
    assert m.held_notes() == {62: (2,)}
    assert m.feed_bytes(off(2, 62)) == [NoteOff(62)]
    assert m.held_notes() == {}


def test_note_off_velocity_zero_and_running_status_count_per_channel():
    m = MidiMapper()
    # ch1 on, ch2 on (running status for the second on), then ch2 off as velocity 0.
    assert m.feed_bytes(bytes([0x90, 60, 90, 0x91, 60, 90, 60, 0])) == \
        [NoteOn(60, 90 / 127)] * 2
    assert m.feed_bytes(off(1, 60)) == [NoteOff(60)]


def test_stray_note_off_from_another_channel_does_not_stop_a_held_note():
    m = MidiMapper()
    m.feed_bytes(on(1, 64))
    assert m.feed_bytes(off(3, 64)) == []
    assert m.feed_bytes(pedal(3, True) + off(3, 64) + pedal(3, False)) == []
    assert m.feed_bytes(off(1, 64)) == [NoteOff(64)]


def test_note_off_for_a_note_nobody_holds_is_passed_on():
    """A key pressed before this mapper existed (a patch was loaded meanwhile) must stop."""
    assert MidiMapper().feed_bytes(off(5, 70)) == [NoteOff(70)]
    m = MidiMapper()
    assert m.feed_bytes(pedal(5, True) + off(5, 70)) == []  # the pedal holds it
    assert m.feed_bytes(pedal(5, False)) == [NoteOff(70)]


def test_sustain_pedal_on_one_channel_holds_only_that_channels_release():
    m = MidiMapper()
    m.feed_bytes(on(1, 60) + on(2, 60) + on(2, 67))
    m.feed_bytes(pedal(1, True))
    assert m.feed_bytes(off(1, 60)) == []  # ch1's pedal holds it
    assert m.feed_bytes(off(2, 67)) == [NoteOff(67)]  # ch2 has no pedal down
    assert m.feed_bytes(off(2, 60)) == []  # ch1's pedal still holds 60
    assert m.held_notes() == {60: (1,)}
    assert m.feed_bytes(pedal(1, False)) == [NoteOff(60)]
    assert m.held_notes() == {}


def test_pedal_release_waits_for_a_key_still_down_on_another_channel():
    m = MidiMapper()
    m.feed_bytes(on(1, 60) + pedal(1, True) + off(1, 60) + on(2, 60))
    assert m.feed_bytes(pedal(1, False)) == []  # ch2's key is still down
    assert m.feed_bytes(off(2, 60)) == [NoteOff(60)]


def test_key_pressed_again_under_the_pedal_and_released_after_it():
    m = MidiMapper()
    m.feed_bytes(on(1, 60) + pedal(1, True) + off(1, 60) + on(1, 60))
    assert m.feed_bytes(pedal(1, False)) == []  # the key is down again
    assert m.feed_bytes(off(1, 60)) == [NoteOff(60)]


def test_reset_controllers_releases_that_channels_pedal_only():
    m = MidiMapper()
    m.feed_bytes(on(1, 60) + pedal(1, True) + off(1, 60))
    m.feed_bytes(on(2, 61) + pedal(2, True) + off(2, 61))
    assert m.feed_bytes(bytes([0xB0, 121, 0])) == [NoteOff(60), PitchBend(0.0)]
    assert m.held_notes() == {61: (2,)}


def test_all_notes_off_is_global_across_channels():
    m = MidiMapper()
    m.feed_bytes(on(1, 60) + on(2, 60) + on(2, 62) + pedal(2, True) + off(2, 62))
    assert m.feed_bytes(bytes([0xB0, 123, 0])) == [AllNotesOff()]  # sent on channel 1
    assert m.held_notes() == {}
    # Nothing is left to release later: ch2's pedal up sends nothing, and a new note on
    # ch1 is not kept alive by ch2's earlier press.
    assert m.feed_bytes(pedal(2, False)) == []
    m.feed_bytes(on(1, 60))
    assert m.feed_bytes(off(1, 60)) == [NoteOff(60)]


def test_try_open_keeps_the_reason_midi_is_off_for_the_banner():
    assert MidiInput.try_open(lambda cmd: None, backend="mido.backends.no_such_backend") is None
    assert "no_such_backend" in MidiInput.last_off_reason
    assert "does not work" in MidiInput.last_off_reason
