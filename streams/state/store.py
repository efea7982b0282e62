"""Where the worker checkpoints user state: the :class:`StateStore` interface and an in-memory store.

The worker's store is :class:`streams.state.table_store.TableStateStore` (a changelog-backed Faust
table); :class:`MemoryStateStore` stands in for it in unit tests and offline runs.
"""

from __future__ import annotations

from typing import Mapping, Protocol

__all__ = ["StateStore", "MemoryStateStore"]


class StateStore(Protocol):
    """Where the learner checkpoints user state (a Faust table in the worker)."""

    def get_user(self, user_id: str) -> bytes | None: ...

    def put_users(self, blobs: Mapping[str, bytes]) -> None: ...

    async def flush(self) -> None:
        """Make everything put so far durable (the worker acknowledges offsets after it)."""
        ...


class MemoryStateStore:
    """A dict-backed :class:`StateStore` for tests and offline runs."""

    def __init__(self) -> None:
        self.users: dict[str, bytes] = {}

    def get_user(self, user_id: str) -> bytes | None:
        return self.users.get(user_id)

    def put_users(self, blobs: Mapping[str, bytes]) -> None:
        self.users.update(blobs)

    async def flush(self) -> None:
        pass  # memory is as durable as it gets here
