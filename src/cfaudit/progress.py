"""The one progress callback type of cfaudit's long jobs."""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(stage, done, total)``: ``done`` of ``total`` steps of ``stage`` are finished.
Progress = Callable[[str, int, int], None]
