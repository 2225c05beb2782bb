"""Single-producer single-consumer float32 ring buffer for the audio callback.

Why no lock is needed: the producer only ever advances ``_write`` and the consumer only
``_read``; both are Python ints (monotonic sample counters, never wrapped), and rebinding an
attribute is atomic under the GIL. Each side reads the other's counter once, so at worst it
sees an older value: the consumer then reads fewer frames than are there, the producer writes
fewer than would fit, and neither touches samples the other is using. Data is copied before
the counter moves, so a reader never sees samples that are not written yet.

The read side allocates no sample memory (it copies into the caller's array; the numpy slice
views it makes are small fixed-size objects), takes no lock and never raises.
"""

from __future__ import annotations

import numpy as np


class Ring:
    """Preallocated mono float32 ring of ``capacity`` frames."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("ring capacity must be >= 1")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, np.float32)
        self._write = 0  # total frames ever written (producer owns it)
        self._read = 0  # total frames ever read (consumer owns it)
        self.underflows = 0  # reads that found fewer frames than asked (consumer owns it)
        self.underflow_frames = 0

    @property
    def available(self) -> int:
        """Frames written and not read yet."""
        return self._write - self._read

    @property
    def free(self) -> int:
        return self.capacity - (self._write - self._read)

    def write(self, data: np.ndarray) -> int:
        """Producer: copy as much of ``data`` as fits; return the frames written."""
        n = min(len(data), self.capacity - (self._write - self._read))
        if n <= 0:
            return 0
        start = self._write % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start:start + first] = data[:first]
        if n > first:
            self._buf[:n - first] = data[first:n]
        self._write += n  # publish after the copy
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Consumer (audio callback): fill ``out`` (1-D view allowed); return frames copied.

        Missing frames become zeros and count as one underflow. Never raises.
        """
        try:
            want = out.shape[0]
            n = min(want, self._write - self._read)
            if n > 0:
                start = self._read % self.capacity
                first = min(n, self.capacity - start)
                out[:first] = self._buf[start:start + first]
                if n > first:
                    out[first:n] = self._buf[:n - first]
                self._read += n  # release after the copy
            else:
                n = 0
            if n < want:
                out[n:] = 0.0
                self.underflows += 1
                self.underflow_frames += want - n
            return n
        except Exception:  # the callback must never see an exception
            return 0
