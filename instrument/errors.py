"""One error root for everything the instrument refuses.

Every message says *what* (the thing: file, key, address), *the value*, *the allowed
range* and *the fix*. Use :func:`describe` to build such messages consistently.
"""

from __future__ import annotations


class InstrumentError(Exception):
    """Root of every error the instrument raises on purpose."""


class ConfigError(InstrumentError):
    """A command-line option or setting is out of range."""


class ParamError(ConfigError):
    """A parameter value is unknown, non-finite or out of range."""


class PatchError(InstrumentError):
    """A patch file is malformed (names file, key, value, allowed range)."""


class ModelFileError(InstrumentError):
    """A model folder is missing, of the wrong version, or has wrong shapes/values."""


class DeviceError(InstrumentError):
    """An audio or MIDI device cannot be opened or runs at an unusable rate."""


class CorpusError(InstrumentError):
    """A sound folder holds too little usable audio to train on."""


class AudioFileError(CorpusError):
    """One audio file cannot be read (the scan skips it and goes on)."""


class ControlError(InstrumentError):
    """A control message (OSC, MIDI, score line) is malformed or refused."""


class ScoreError(ControlError):
    """A score file line is malformed."""


def describe(thing: str, value: object, allowed: str, fix: str) -> str:
    """Build a message of the house shape: ``thing: got VALUE, allowed ALLOWED; FIX``."""
    return f"{thing}: got {value!r}, allowed {allowed}; {fix}"
