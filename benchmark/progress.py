"""Progress display: a tqdm bar on a terminal, short plain lines in a log file.

Room: how long-running loops report progress. tqdm redraws its bar with carriage returns,
which a log file (stderr redirected, CI) keeps as one ever-growing line; off a terminal this
module prints a plain line every 10 % or every 30 s instead.

Example::

    bar = progress(total=300, desc="mean-shape on synthetic/test", enabled=True)
    for _ in range(300):
        bar.update(1)
    bar.close()
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class PlainProgress:
    """A tqdm-like counter that prints ``desc: n/total (p%) t s`` lines now and then.

    Args:
        total: number of steps.
        desc: what is counted.
        stream: where lines go (default: ``sys.stderr`` at each print).
        every_fraction: print when another this fraction of ``total`` is done.
        every_seconds: print at least this often while steps arrive.
    """

    def __init__(self, total: int, desc: str, stream: IO[str] | None = None,
                 every_fraction: float = 0.1, every_seconds: float = 30.0) -> None:
        self.total, self.desc, self.stream = int(total), desc, stream
        self.n = 0
        self.every_fraction, self.every_seconds = every_fraction, every_seconds
        self._t0 = self._last_t = time.monotonic()
        self._last_n = 0
        self._closed = False

    def _print(self) -> None:
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        elapsed = time.monotonic() - self._t0
        out = self.stream or sys.stderr
        print(f"{self.desc}: {self.n}/{self.total}{pct} {elapsed:.0f} s", file=out, flush=True)
        self._last_t, self._last_n = time.monotonic(), self.n

    def update(self, n: int = 1) -> None:
        """Counts ``n`` more steps; prints when a step of the schedule is passed."""
        self.n += n
        step = max(1, int(self.total * self.every_fraction))
        if (self.n - self._last_n >= step or self.n == self.total
                or time.monotonic() - self._last_t >= self.every_seconds):
            if self.n != self._last_n:
                self._print()

    def close(self) -> None:
        """Prints the final count once (if it was not just printed)."""
        if not self._closed and self.n != self._last_n:
            self._print()
        self._closed = True


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, enabled: bool = True, unit: str = "img") -> Any:
    """A tqdm bar on a terminal, :class:`PlainProgress` otherwise, or a silent counter.

    Args:
        total: number of steps.
        desc: label of the bar.
        enabled: False returns a counter that prints nothing.
        unit: tqdm's unit label.
    """
    if not enabled:
        return _Silent()
    stream = sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    return PlainProgress(total, desc)
