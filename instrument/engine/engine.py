"""The synthesizer engine: commands -> decoder -> voices -> synthesis -> limiter.

Pitched models: the engine runs in fixed internal hops at the output rate, ``hop_samples =
round(decoder.hop_samples * sample_rate / decoder.sample_rate)`` (the model's frame period,
e.g. 256 samples = 5.3 ms at 48 kHz). Commands take effect at hop boundaries; everything
inside a hop is interpolated per sample (wavetable crossfade, f0 glide, noise overlap-add),
so :meth:`Engine.process` gives bit-identical output whatever the block sizes.

Unpitched models: the decoder's frames are ``|STFT|`` frames at the model's rate, so they are
synthesized there (RTPGHI phase + overlap-add, :class:`~instrument.engine.synth.UnpitchedVoices`)
one model hop at a time and, when the output rate differs, resampled by a streaming soxr
resampler inside the hop rendering (a hop then gives a varying number of output samples;
the speed and the spectrum stay right). A note *triggers* the sound with its envelope and
velocity; its pitch does not transpose it (every voice plays the frame at the current
latent), and ``harmonic_db``, ``noise_db``, bends and ``drone_hz`` have no effect.

Threading: :meth:`send` and :meth:`schedule` may be called from any thread (OSC, MIDI);
:meth:`process` from one thread (the player's worker, never the audio callback).

Live commands (:meth:`send`) come in two kinds. *Continuous* controls (``SetLatent`` per axis,
``SetParam`` per name, ``PitchBend``, ``FreezeLatent``) are states: each has one preallocated
slot where the latest value wins, so a flood of them is never refused and costs the engine
nothing. *Discrete* events (``NoteOn``, ``NoteOff``, ``Gate``, ``AllNotesOff``) go through a
bounded queue in order; releases (``NoteOff``, ``AllNotesOff``, ``Gate(False)``) have
``RELEASE_RESERVE`` places of their own and are never dropped. A latent move sent while
the latest ``FreezeLatent`` sent is on is ignored at once. At each hop boundary the
changed slots apply first (in the order they were sent), then the queued events in order,
then due scheduled commands: a note-on, a latent move and a note-off sent within one hop
play as the note with its release and the moved latent.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
from collections import deque

import numpy as np

from instrument import params
from instrument.control.commands import (
    AllNotesOff,
    Command,
    FreezeLatent,
    Gate,
    NoteOff,
    NoteOn,
    PitchBend,
    SetLatent,
    SetParam,
)
from instrument.engine.synth import HarmonicSynth, Limiter, NoiseSynth, UnpitchedVoices
from instrument.engine.voices import ATTACK, DECAY, FADE, GATE_KEY, RELEASE, Voice, advance
from instrument.errors import ConfigError, describe

log = logging.getLogger(__name__)

AMP_FLOOR = 1e-4
LOG_FLOOR = math.log(AMP_FLOOR)
LOG_CEIL = 12.0  # exp(12) ≈ 1.6e5: far above any sane frame, far below float32 overflow
REFERENCE_RMS = 10.0 ** (-12.0 / 20.0)  # one voice, velocity 1, 0 dB gains: -12 dBFS RMS
# Unpitched sounds are noise-like and percussive (crest factor ~12 dB or more): 6 dB lower,
# so one voice's peaks stay under the limiter.
REFERENCE_RMS_UNPITCHED = 10.0 ** (-18.0 / 20.0)
QUEUE_CAPACITY = 1024  # discrete events waiting for the next hop (note-ons, gates)
RELEASE_RESERVE = 1024  # more places only releases (note-off, all-off, gate off) may use
_RELEASES = (NoteOff, AllNotesOff)
_LATENT_X, _LATENT_Y, _BEND, _FREEZE = "latent.x", "latent.y", "bend", "freeze"


def _db(x: float) -> float:
    return 10.0 ** (x / 20.0)


def note_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


class Engine:
    """Polyphonic synthesizer driven by :mod:`commands`: harmonic-plus-noise for pitched
    models, phase-reconstructed magnitude frames for unpitched ones."""

    def __init__(self, decoder, sample_rate: int, max_voices: int = 16, seed: int = 0,
                 block_hint: int = 256, hop_samples: int | None = None):
        if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 384000:
            raise ConfigError(describe("engine sample_rate", sample_rate, "8000..384000 Hz",
                                       "pass the device's rate"))
        if not 1 <= int(max_voices) <= 64:
            raise ConfigError(describe("engine max_voices", max_voices, "1..64",
                                       "pass a smaller polyphony"))
        self.pitched = bool(decoder.pitched)
        nominal_hop = round(decoder.hop_samples * sample_rate / decoder.sample_rate)
        if not self.pitched and hop_samples is not None and int(hop_samples) != nominal_hop:
            raise ConfigError(describe("engine hop_samples (unpitched model)", hop_samples,
                                       f"None or {nominal_hop} (the model's hop at this rate)",
                                       "leave hop_samples out for unpitched models"))
        self.sample_rate = sample_rate
        self.max_voices = int(max_voices)
        self.seed = int(seed)
        self.block_hint = int(block_hint)
        self.hop_samples = int(hop_samples or max(16, nominal_hop))
        self.decoder = decoder
        self._pending_decoder = None
        self._n_slots = 2 * self.max_voices  # room for stolen voices fading out
        self._max_hz = 0.5 * min(sample_rate, decoder.sample_rate)
        if self.pitched:
            self.hop_ms = 1000.0 * self.hop_samples / sample_rate
            self._harm = HarmonicSynth(sample_rate, self.hop_samples, self._n_slots,
                                       decoder.n_harmonics, self._max_hz)
            self._noise = NoiseSynth(sample_rate, self.hop_samples,
                                     decoder.noise_band_edges_hz, self._max_hz, seed)
        else:  # one internal hop = one model frame, rendered at the model's rate
            self.hop_ms = 1000.0 * decoder.hop_samples / decoder.sample_rate
            self._uni = UnpitchedVoices(decoder.sample_rate, sample_rate, int(decoder.n_fft),
                                        int(decoder.hop_samples), self._n_slots, seed)
            # a unit-power Hann |STFT| frame is a signal of RMS 4 / (sqrt(3) n_fft)
            self._frame_scale = math.sqrt(3.0 / 16.0) * decoder.n_fft \
                * REFERENCE_RMS_UNPITCHED / REFERENCE_RMS
        self._limiter = Limiter(sample_rate, self.hop_samples)
        self._queue: deque[Command] = deque()  # discrete events, in order
        # continuous controls: key -> (generation, value), latest wins; keys never change
        self._slot_keys = (_LATENT_X, _LATENT_Y, _BEND, _FREEZE, *params.PARAMS)
        self._slots: dict[str, tuple[int, float]] = {k: (0, 0.0) for k in self._slot_keys}
        self._slot_seen = dict.fromkeys(self._slot_keys, 0)  # generation applied per slot
        self._gen = itertools.count(1)  # next() is atomic under the GIL
        self._slots_gen = 0  # the newest generation stored (written after the slot)
        self._slots_seen = 0
        self._release_all = False  # the release reserve overflowed: release every voice
        self._frozen_sent = False  # the latest FreezeLatent sent (live moves are held)
        self.release_overflow = 0
        self._sched: list[tuple[int, int, Command]] = []
        self._sched_lock = threading.Lock()
        self._sched_seq = 0
        self.dropped = 0
        self.ignored = 0
        self.xruns = 0  # reported by the player
        self.sanitized_frames = 0
        self.nonfinite_output = 0
        self.stolen = 0
        self._reset_state()

    # ---------------------------------------------------------------- public API
    @property
    def latency_samples(self) -> int:
        """Worst-case delay from a command to its effect: one hop (pitched); one hop plus
        the overlap-add, look-ahead and resampler delay to the frame's centre (unpitched)."""
        if self.pitched:
            return self.hop_samples
        return self.hop_samples + self._uni.latency_samples

    def send(self, cmd: Command) -> bool:
        """Hand a live command to the next hop boundary; never blocks, no lock.

        Continuous controls (latent, params, bend, freeze) overwrite their slot: always True.
        Discrete events queue in order: False (counted in ``dropped``) when the queue holds
        ``QUEUE_CAPACITY`` events. Releases are never refused: they use ``RELEASE_RESERVE``
        more places, and past that they become one release of every voice at the next hop
        (counted in ``release_overflow``), so a flood cannot leave a note stuck.
        """
        t = type(cmd)
        slots = self._slots
        if t is SetLatent:
            if self._frozen_sent:  # decided here, so freeze/move/unfreeze keep their order
                return True
            g = next(self._gen)
            if cmd.x is not None:
                slots[_LATENT_X] = (g, cmd.x)
            if cmd.y is not None:
                slots[_LATENT_Y] = (g, cmd.y)
        elif t is SetParam:
            g = next(self._gen)
            slots[cmd.name] = (g, cmd.value)
        elif t is PitchBend:
            g = next(self._gen)
            slots[_BEND] = (g, cmd.value)
        elif t is FreezeLatent:
            self._frozen_sent = bool(cmd.on)
            g = next(self._gen)
            slots[_FREEZE] = (g, 1.0 if cmd.on else 0.0)
        else:
            q = self._queue
            if t in _RELEASES or (t is Gate and not cmd.on):
                if len(q) >= QUEUE_CAPACITY + RELEASE_RESERVE:
                    self.release_overflow += 1
                    self._release_all = True
                    return True
            elif len(q) >= QUEUE_CAPACITY:
                self.dropped += 1
                return False
            q.append(cmd)  # deque appends are atomic under the GIL
            return True
        self._slots_gen = g  # after the slot: a reader that sees it also sees the slot
        return True

    def schedule(self, cmd: Command, at_sample: int) -> None:
        """Apply ``cmd`` at the first hop boundary at or after output sample ``at_sample``."""
        with self._sched_lock:
            heapq.heappush(self._sched, (int(at_sample), self._sched_seq, cmd))
            self._sched_seq += 1

    def swap_decoder(self, decoder) -> None:
        """Hand over to ``decoder`` at the next hop boundary; the synthesis crossfades over
        that hop (wavetables and noise frames overlap; unpitched: the overlap-add of
        consecutive frames), so the switch does not click."""
        cur = self.decoder
        if self.pitched:
            ok = decoder.pitched and decoder.n_harmonics == cur.n_harmonics
            got = f"{decoder.mode}/{decoder.n_harmonics} harmonics"
            want = f"pitched/{cur.n_harmonics} harmonics"
        else:
            ok = (not decoder.pitched and decoder.sample_rate == cur.sample_rate
                  and decoder.n_fft == cur.n_fft and decoder.hop_samples == cur.hop_samples)
            got = f"{decoder.mode}/{decoder.sample_rate} Hz/n_fft {decoder.n_fft}/" \
                  f"hop {decoder.hop_samples}"
            want = f"unpitched/{cur.sample_rate} Hz/n_fft {cur.n_fft}/hop {cur.hop_samples}"
        if not ok:
            raise ConfigError(describe("swap_decoder model", got, want,
                                       "swap in a model of the same kind"))
        self._pending_decoder = decoder

    def process(self, frames: int) -> np.ndarray:
        """The next ``frames`` output samples, (frames,) float32 in [-1, 1]."""
        if not isinstance(frames, int | np.integer) or frames < 0:
            raise ConfigError(describe("process frames", frames, "an int >= 0",
                                       "ask for a block size"))
        frames = int(frames)
        start = self._buf_pos
        if len(self._buf) - start >= frames:  # the common case: the current hop has them
            self._buf_pos = start + frames
            return self._buf[start:start + frames].copy()
        out = np.empty(frames, np.float32)
        pos = 0
        while pos < frames:
            have = len(self._buf) - self._buf_pos
            if have <= 0:  # an unpitched hop may give 0 samples while the resampler fills
                self._buf = self._render_hop()
                self._buf_pos = 0
                continue
            n = min(have, frames - pos)
            out[pos:pos + n] = self._buf[self._buf_pos:self._buf_pos + n]
            self._buf_pos += n
            pos += n
        return out

    def reset(self) -> None:
        """Back to the state just after construction (voices, params, latent, queues)."""
        self._queue.clear()
        self._release_all = False
        self._frozen_sent = False
        self._slots_seen = self._slots_gen  # controls sent before the reset are forgotten
        self._slot_seen = {k: self._slots[k][0] for k in self._slot_keys}
        with self._sched_lock:
            self._sched.clear()
        self._reset_synths()
        self._reset_state()

    def _reset_synths(self) -> None:
        if self.pitched:
            self._harm.reset()
            self._noise.reset()
        else:
            self._uni.reset()
        self._limiter.reset()

    def status(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "block": self.block_hint,
            "hop_samples": self.hop_samples,
            "latency_samples": self.latency_samples,
            "latency_ms": 1000.0 * self.latency_samples / self.sample_rate,
            "voices": sum(1 for v in self._voices if v.stage != FADE),
            "max_voices": int(self._target["voices"]),
            "xruns": self.xruns,
            "dropped": self.dropped,
            "release_overflow": self.release_overflow,
            "ignored": self.ignored,
            "stolen": self.stolen,
            "sanitized_frames": self.sanitized_frames,
            "nonfinite_output": self.nonfinite_output,
            "limiter_hops": self._limiter.active_hops,
            "model": self.decoder.name,
            "mode": "pitched" if self.pitched else "unpitched",
            "latent": [self._latent[0], self._latent[1]],
            "frozen": self._frozen,
            "params": dict(self._target),
        }

    # ---------------------------------------------------------------- state
    def _reset_state(self) -> None:
        self._target = params.defaults()  # what commands asked for
        self._smooth = dict(self._target)  # smoothed values actually used
        self._smoothing: set[str] = set()  # names whose smoothed value has not arrived yet
        self._latent = [self._target["latent_x"], self._target["latent_y"]]
        self._latent_target = list(self._latent)
        self._frozen = False
        self._bend = 0.0
        self._voices: list[Voice] = []
        self._free = list(range(self._n_slots))
        self._hop_index = 0
        self._sample = 0  # start sample of the next hop
        self._buf = np.zeros(0, np.float32)
        self._buf_pos = 0
        self._decode_key: tuple | None = None
        self._decoded: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
        self._decoded_frame = np.zeros(0)
        self._steady_key: tuple | None = None  # what the last pitched hop was made from
        self._steady_out: tuple = ()
        self._steady_glide_done = False
        self._took_steady = False  # the last _synth call took the steady path
        self._hold = False  # the next hop repeats the last one's inputs unless a command is due
        self._zeros = np.zeros(self.hop_samples, np.float32)
        self._silent = True  # the last hop was exact silence with nothing pending

    # ---------------------------------------------------------------- commands
    def _apply(self, cmd: Command) -> None:
        if isinstance(cmd, SetLatent):
            if not self._frozen:
                if cmd.x is not None:
                    self._latent_target[0] = cmd.x
                if cmd.y is not None:
                    self._latent_target[1] = cmd.y
        elif isinstance(cmd, NoteOn):
            self._note_on(cmd.note, cmd.velocity)
        elif isinstance(cmd, NoteOff):
            for v in self._voices:
                if v.key == cmd.note and v.held:
                    v.stage = RELEASE
        elif isinstance(cmd, PitchBend):
            self._bend = cmd.value
        elif isinstance(cmd, SetParam):
            self._set_param(cmd.name, cmd.value)
        elif isinstance(cmd, Gate):
            if cmd.on:
                self._note_on(GATE_KEY, 1.0)
            else:
                for v in self._voices:
                    if v.key == GATE_KEY and v.held:
                        v.stage = RELEASE
        elif isinstance(cmd, FreezeLatent):
            self._frozen = bool(cmd.on)
        elif isinstance(cmd, AllNotesOff):
            for v in self._voices:
                if v.held:
                    v.stage = RELEASE
        else:  # LoadPatch among them: the app loads patches and sends their commands
            self.ignored += 1

    def _set_param(self, name: str, value: float) -> None:
        spec = params.get(name)
        self._target[name] = value
        if spec.smooth_ms <= 0.0:
            self._smooth[name] = value
        elif self._smooth[name] != value:
            self._smoothing.add(name)
        if name == "latent_x" and not self._frozen:
            self._latent_target[0] = value
        elif name == "latent_y" and not self._frozen:
            self._latent_target[1] = value
        elif name == "voices":
            self._enforce_polyphony(int(value))

    def _sounding(self) -> list[Voice]:
        return [v for v in self._voices if v.stage != FADE]

    def _steal_one(self) -> None:
        live = self._sounding()
        releasing = [v for v in live if v.stage == RELEASE]
        victim = min(releasing, key=lambda v: v.level) if releasing \
            else min(live, key=lambda v: v.started)
        self.stolen += 1
        if not victim.sounded:  # never heard: free at once
            self._voices.remove(victim)
            self._free.append(victim.slot)
        else:
            victim.stage = FADE

    def _enforce_polyphony(self, limit: int) -> None:
        while len(self._sounding()) > limit:
            self._steal_one()

    def _note_on(self, key: float, velocity: float) -> None:
        for v in self._voices:  # retrigger: same key keeps its phase, attack from its level
            if v.key == key and v.stage != FADE:
                v.stage, v.velocity, v.done = ATTACK, velocity, False
                v.started = self._hop_index
                return
        limit = int(self._target["voices"])
        while len(self._sounding()) >= min(limit, self.max_voices):
            self._steal_one()
        if not self._free:  # only when more notes than slots arrive in one hop
            self.dropped += 1
            return
        slot = min(self._free)  # lowest first: unpitched banks without voices are skipped
        self._free.remove(slot)
        if self.pitched:
            self._harm.start(slot, self._voice_hz(key))
        else:
            self._uni.start(slot)
        self._voices.append(Voice(slot, key, velocity, self._hop_index))

    def _voice_hz(self, key: float) -> float:
        base = self._smooth["drone_hz"] if key == GATE_KEY else note_hz(key)
        return base * 2.0 ** (self._bend * self._target["bend_range_st"] / 12.0)

    def _take_slots(self) -> None:
        """Apply the continuous controls that changed since the last hop, oldest first."""
        self._slots_seen = self._slots_gen
        slots, seen = self._slots, self._slot_seen
        changed = []
        for key in self._slot_keys:
            g, value = slots[key]
            if g != seen[key]:
                seen[key] = g
                changed.append((g, key, value))
        changed.sort()
        for _, key, value in changed:
            if key == _LATENT_X or key == _LATENT_Y:
                if not self._frozen:
                    self._latent_target[key == _LATENT_Y] = value
            elif key == _BEND:
                self._bend = value
            elif key == _FREEZE:
                self._frozen = value != 0.0
            else:
                self._set_param(key, value)

    def _take_due_commands(self) -> None:
        if self._slots_gen != self._slots_seen:
            self._take_slots()
        q = self._queue
        for _ in range(len(q)):  # what is queued now; later sends wait for the next hop
            self._apply(q.popleft())
        if self._release_all:
            self._release_all = False
            self._apply(AllNotesOff())
        if self._sched and self._sched[0][0] <= self._sample:
            with self._sched_lock:
                due = []
                while self._sched and self._sched[0][0] <= self._sample:
                    due.append(heapq.heappop(self._sched)[2])
            for cmd in due:
                self._apply(cmd)

    # ---------------------------------------------------------------- one hop
    def _smooth_params(self) -> None:
        if self._smoothing:
            self._smooth_moving()
        lat, tgt = self._latent, self._latent_target
        if lat[0] == tgt[0] and lat[1] == tgt[1]:  # settled: nothing to glide
            return
        glide_ms = self._target["glide_ms"]
        a = 1.0 if glide_ms <= 0.0 else 1.0 - math.exp(-self.hop_ms / glide_ms)
        for i in (0, 1):
            gap = tgt[i] - lat[i]
            # snap when close, so a settled latent is exactly steady (the synth then skips work)
            lat[i] = tgt[i] if abs(gap) < 1e-6 else lat[i] + gap * a

    def _smooth_moving(self) -> None:
        for name in list(self._smoothing):  # only the parameters still moving
            cur, tgt = self._smooth[name], self._target[name]
            if cur != tgt:
                a = 1.0 - math.exp(-self.hop_ms / params.get(name).smooth_ms)
                nxt = cur + (tgt - cur) * a
                self._smooth[name] = tgt if abs(tgt - nxt) < 1e-6 * (1 + abs(tgt)) else nxt
            if self._smooth[name] == tgt:
                self._smoothing.discard(name)

    def _render_hop(self) -> np.ndarray:
        if self._hold:
            if self._pending_decoder is None and self._slots_gen == self._slots_seen \
                    and not self._queue and not self._release_all \
                    and not (self._sched and self._sched[0][0] <= self._sample):
                return self._hold_hop()
            self._hold = False
        if self._pending_decoder is not None:
            self.decoder, self._pending_decoder = self._pending_decoder, None
            if self.pitched:
                self._noise.set_bands(self.decoder.noise_band_edges_hz)
        self._take_due_commands()
        self._smooth_params()
        t = self._target
        hop_ms, att, dec, sus, rel = (self.hop_ms, t["attack_ms"], t["decay_ms"], t["sustain"],
                                      t["release_ms"])
        levels = [advance(v, hop_ms, att, dec, sus, rel) * v.velocity for v in self._voices]
        out_gain = _db(self._smooth["gain_db"]) * REFERENCE_RMS
        if not self.pitched:
            y = self._synth_unpitched(levels, out_gain)
        elif self._voices:
            y = self._synth(levels, out_gain)
        elif self._silent:  # idle: no voice, no noise tail, limiter released
            self._hop_index += 1
            self._sample += self.hop_samples
            return self._zeros
        else:
            self._steady_key = None  # the noise synth ran without voices
            y = self._noise.process(np.zeros((0, 1), np.float32), np.zeros(0, np.float32))
        done = False
        for v in self._voices:
            v.sounded = True
            done = done or v.done
        if done:
            for v in [v for v in self._voices if v.done]:
                self._voices.remove(v)
                self._free.append(v.slot)
        self._hop_index += 1
        self._sample += len(y)
        if self.pitched and self._voices and self._took_steady:
            self._hold = self._settled()
        return self._finish(y)

    def _settled(self) -> bool:
        """Whether the next hop, without a command, has exactly this hop's inputs: no
        parameter smoothing, the latent settled, every voice held at a positive sustain."""
        if self._smoothing or self._latent != self._latent_target:
            return False
        sus = self._target["sustain"]
        return sus > 0.0 and all(v.stage == DECAY and v.level == sus for v in self._voices)

    def _hold_hop(self) -> np.ndarray:
        """A hop with the last hop's inputs (see :meth:`_settled`): the voices' envelopes,
        the latent, pitches and gains stay as they are, so the bookkeeping is skipped and
        the synths take their steady paths (the same samples the full hop would give)."""
        slots, f0, amps, n_gain = self._steady_out
        y = self._harm.process(slots, amps, f0, same_as_last=True)
        y += self._noise.process(self._decoded[1], n_gain, same_as_last=True)
        self._hop_index += 1
        self._sample += len(y)
        return self._finish(y)

    def _finish(self, y: np.ndarray) -> np.ndarray:
        """The output stage of a hop: NaN guard, limiter, silence tracking, clip."""
        if not len(y):
            return y
        hi, lo = float(y.max()), float(y.min())  # NaN and inf propagate to these
        if not (math.isfinite(hi) and math.isfinite(lo)):  # never let NaN reach the audio
            self.nonfinite_output += 1
            y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
            self._reset_synths()
            self._steady_key = self._decode_key = None
            self._hold = False
            hi, lo = float(y.max()), float(y.min())
        peak = max(hi, -lo)
        y = self._limiter.process(y, peak)
        if self.pitched and not self._voices:  # the noise tail has just played out?
            self._silent = not y.any() and not self._noise.tail.any() \
                and self._limiter.reduction == 0.0
        else:
            self._silent = False
        if peak > 1.0:  # the limiter's gain is <= 1: below 1 in, below 1 out
            np.minimum(y, 1.0, out=y)
            np.maximum(y, -1.0, out=y)
        return y

    def _synth(self, levels: list[float], out_gain: float) -> np.ndarray:
        dec = self.decoder
        voices = self._voices
        # Python tuples for the keys: cheaper than arrays, the same equality for finite f0
        f0_t = tuple([self._voice_hz(v.key) for v in voices])
        key = (dec, self._latent[0], self._latent[1], f0_t)
        s = self._smooth
        steady = (key, tuple([v.slot for v in voices]), tuple(levels), out_gain,
                  s["harmonic_db"], s["noise_db"])
        same = steady == self._steady_key
        if same and self._steady_glide_done:
            slots, f0, amps, n_gain = self._steady_out  # all as the last hop: the same arrays
            y = self._harm.process(slots, amps, f0, same_as_last=True)
            self._took_steady = True
        else:
            self._took_steady = False
            slots = np.array(steady[1], np.int64)
            f0 = np.array(f0_t, np.float64)
            if key == self._decode_key:  # same decoder, latent and pitches as the last hop
                harm, noise = self._decoded
            else:
                harm, noise = self._decode(dec, f0)
                self._decode_key, self._decoded = key, (harm, noise)
            lev = np.array(levels, np.float64) * out_gain
            h_gain = (lev * _db(s["harmonic_db"])).astype(np.float32)
            n_gain = (lev * _db(s["noise_db"])).astype(np.float32)
            amps = harm * h_gain[:, None]
            # same inputs next hop may take the steady path once this hop's f0 glide is over
            self._steady_glide_done = same
            self._steady_key, self._steady_out = steady, (slots, f0, amps, n_gain)
            y = self._harm.process(slots, amps, f0)
        y += self._noise.process(self._decoded[1], n_gain, same_as_last=same)
        return y

    def _synth_unpitched(self, levels: list[float], out_gain: float) -> np.ndarray:
        voices = self._voices
        n_v = len(voices)
        frame = None
        if n_v:
            key = (self.decoder, tuple(self._latent))
            if key != self._decode_key:  # same decoder and latent as the last hop: reuse
                self._decode_key, self._decoded_frame = key, self._decode_frame(self.decoder)
            frame = self._decoded_frame
        slots = np.fromiter((v.slot for v in voices), np.int64, n_v)
        gains = np.asarray(levels, np.float64) * out_gain
        return self._uni.process(slots, gains, frame)

    def _decode_frame(self, dec) -> np.ndarray:
        """The unpitched frame at the latent: (n_bins,) float64 linear magnitudes, unit power
        times ``_frame_scale`` (a gain of 1 is then the reference level)."""
        knob = np.asarray([self._latent], np.float32)
        raw = dec.decode_log(knob)
        if not np.isfinite(raw).all():
            self.sanitized_frames += 1
            raw = np.nan_to_num(raw, nan=LOG_FLOOR, posinf=LOG_CEIL, neginf=LOG_FLOOR)
        amp = np.exp(np.clip(raw[0].astype(np.float64), LOG_FLOOR, LOG_CEIL)) - AMP_FLOOR
        np.maximum(amp, 0.0, out=amp)
        power = float(np.dot(amp, amp))
        return amp * (self._frame_scale / math.sqrt(power)) if power > 1e-12 else amp * 0.0

    def _decode(self, dec, f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decoder frames for the voices, sanitized and normalised to unit power."""
        knob = np.empty((len(f0), 2), np.float32)
        knob[:, 0], knob[:, 1] = self._latent
        raw = dec.decode_log(knob, f0)
        # a NaN or inf anywhere makes the sum non-finite: the exact check only then
        if not math.isfinite(float(raw.sum())) and not np.isfinite(raw).all():
            self.sanitized_frames += 1
            raw = np.nan_to_num(raw, nan=LOG_FLOOR, posinf=LOG_CEIL, neginf=LOG_FLOOR)
        amp = np.maximum(raw, LOG_FLOOR)  # np.clip's values, without its wrapper
        np.minimum(amp, LOG_CEIL, out=amp)
        np.exp(amp, out=amp)
        amp -= AMP_FLOOR
        np.maximum(amp, 0.0, out=amp)
        n_h = dec.n_harmonics
        harm, noise = amp[:, :n_h], amp[:, n_h:]
        sq = np.square(amp)
        power = 0.5 * sq[:, :n_h].sum(axis=1) + sq[:, n_h:].sum(axis=1)
        norm = np.where(power > 1e-12, 1.0 / np.sqrt(np.maximum(power, 1e-12)), 0.0)
        norm = norm.astype(np.float32)[:, None]
        return harm * norm, noise * norm
