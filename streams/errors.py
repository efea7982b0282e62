"""The root exception of streamrec's service layer; one subclass per area.

Each area raises its own subclass: :class:`streams.settings.SettingsError` (configuration),
:class:`streams.events.InvalidEvent` (input), :class:`streams.state.codecs.StateCorrupt` and
:class:`streams.worker.exchange.ItemUpdateCorrupt` (stored state), :class:`streams.tools.dev.DevServicesError`
(the embedded services), :class:`streams.tools.worker_process.WorkerFailed` (a worker child process),
:class:`ServiceUnavailable` (Kafka or Redis cannot be reached).
Catch :class:`StreamrecError` to handle any of them. The learning math has its own root,
:class:`models.ModelError`, since ``models`` depends on nothing in ``streams``.
"""

from __future__ import annotations

__all__ = ["StreamrecError", "ServiceUnavailable"]


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose."""



class ServiceUnavailable(StreamrecError):
    """Kafka or Redis cannot be reached at the address a setting gives.

    Its message is one line naming the address and the setting (or option) to change::

        cannot reach Kafka at 127.0.0.1:9092 (STREAMREC_BROKER_URL): Connection refused
    """

    def __init__(self, service: str, address: str, setting: str, reason: str) -> None:
        self.service = service
        self.address = address
        self.setting = setting
        self.reason = reason
        super().__init__(f"cannot reach {service} at {address} ({setting}): {reason}")
