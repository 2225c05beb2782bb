"""Score files: timed commands, as text (``0.50 note 60 0.8`` per line, ``#`` comments) or
JSON (``[{"t": 0.5, "cmd": "note 60 0.8"}, ...]``); times in seconds from the start."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from instrument.control.commands import Command, parse
from instrument.errors import ControlError, ScoreError, describe


@dataclass(frozen=True)
class Event:
    time_s: float
    cmd: Command


def _event(where: str, t: object, text: object) -> Event:
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise ScoreError(describe(f"{where}: time", t, "a finite number of seconds >= 0",
                                  "write e.g. '0.5 note 60 0.8'"))
    if not isinstance(text, str):
        raise ScoreError(describe(f"{where}: command", text, "a command string",
                                  "write e.g. 'note 60 0.8'"))
    try:
        return Event(float(t), parse(text))
    except ControlError as e:
        raise ScoreError(f"{where}: {e}") from None


def parse_text(text: str, name: str = "<score>") -> list[Event]:
    events = []
    for i, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        where = f"{name}:{i}"
        head, _, rest = body.partition(" ")
        try:
            t = float(head)
        except ValueError:
            raise ScoreError(describe(f"{where}: time", head, "seconds, then a command",
                                      "start the line with a time, e.g. '0.5 note 60'"))\
                from None
        events.append(_event(where, t, rest.strip()))
    return sorted(events, key=lambda e: e.time_s)  # stable: same-time lines keep their order


def parse_json(text: str, name: str = "<score>") -> list[Event]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScoreError(f"{name}:{e.lineno}: not valid JSON ({e.msg}); write a list of "
                         '{"t": seconds, "cmd": "note 60 0.8"} objects') from None
    if not isinstance(data, list):
        raise ScoreError(describe(f"{name}: top level", type(data).__name__, "a JSON list",
                                  'write [{"t": 0, "cmd": "note 60"}]'))
    events = []
    for i, item in enumerate(data):
        where = f"{name}: item {i}"
        if not isinstance(item, dict) or "t" not in item or "cmd" not in item:
            raise ScoreError(describe(where, item, 'an object with "t" and "cmd"',
                                      'write {"t": 0.5, "cmd": "note 60 0.8"}'))
        events.append(_event(where, item["t"], item["cmd"]))
    return sorted(events, key=lambda e: e.time_s)


def load(path: str | Path) -> list[Event]:
    """Read a score file (JSON if it ends in .json or starts with '[')."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScoreError(f"score {str(p)!r}: cannot be read ({e}); pass a text or JSON "
                         "score file") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith("["):
        return parse_json(text, str(p))
    return parse_text(text, str(p))
