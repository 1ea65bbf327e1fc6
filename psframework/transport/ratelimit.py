"""Logging that a flood cannot turn into a flood of log lines."""

from __future__ import annotations

import logging
import time

__all__ = ["RateLimited"]


class RateLimited:
    """A logger that says the first `burst` things per `period` seconds and then how many
    it kept quiet about: a flood of bad peers must not become a flood of log lines."""

    def __init__(self, logger: logging.Logger, burst: int = 20, period: float = 60.0) -> None:
        self.logger, self.burst, self.period = logger, burst, period
        self._window_start = -period
        self._said = self._quiet = 0

    def warning(self, fmt: str, *args: object) -> None:
        self._log(logging.WARNING, fmt, args)

    def exception(self, fmt: str, *args: object, exc_info: BaseException) -> None:
        self._log(logging.ERROR, fmt, args, exc_info)

    def _log(self, level: int, fmt: str, args: tuple, exc_info=None) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.period:
            if self._quiet:
                self.logger.log(level, "... and %d more like these in the last %.0fs",
                                self._quiet, now - self._window_start)
            self._window_start, self._said, self._quiet = now, 0, 0
        if self._said < self.burst:
            self._said += 1
            self.logger.log(level, fmt, *args, exc_info=exc_info)
        else:
            self._quiet += 1
