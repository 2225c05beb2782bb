"""listen/: live audio in -> encoder -> 2-D knob coordinates -> OSC out (see docs/LISTEN.md).

- :class:`~instrument.listen.follower.Follower` — streaming analysis + encoder, per hop
- :class:`~instrument.listen.sender.Sender` — OSC out to targets, from a worker thread
- :class:`~instrument.listen.live.Listener` — device (sounddevice) or file input, real time
- :mod:`instrument.listen.encode` — offline trajectories (CSV/JSON) and pictures

sounddevice is imported only when a device is opened.
"""

from instrument.listen.follower import Coord, Follower

__all__ = ["Coord", "Follower"]
