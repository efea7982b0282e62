"""The root exception of streamrec's service layer; one subclass per area.

Each area raises its own subclass: :class:`streams.settings.SettingsError` (configuration),
:class:`streams.events.InvalidEvent` (input), :class:`streams.state.codecs.StateCorrupt` and
:class:`streams.worker.exchange.ItemUpdateCorrupt` (stored state), :class:`streams.tools.dev.DevServicesError`
(the embedded services), :class:`streams.tools.worker_process.WorkerFailed` (a worker child process).
Catch :class:`StreamrecError` to handle any of them. The learning math has its own root,
:class:`models.ModelError`, since ``models`` depends on nothing in ``streams``.
"""

from __future__ import annotations

__all__ = ["StreamrecError"]


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose."""
