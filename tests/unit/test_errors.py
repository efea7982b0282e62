"""Every error streamrec raises on purpose sits under one root per package, keeping its built-in base."""

from __future__ import annotations

import pytest

from models import InvalidInputError, ModelError, UnknownIdError
from models.datasets import DatasetError
from models.river_adapter import RiverNotInstalledError
from streams.errors import ServiceUnavailable, StreamrecError
from streams.events import InvalidEvent
from streams.settings import Settings, SettingsError
from streams.state.codecs import StateCorrupt
from streams.tools.dev import DevServicesError
from streams.tools.worker_process import WorkerFailed
from streams.worker.exchange import ItemUpdateCorrupt


@pytest.mark.parametrize("error", [SettingsError, InvalidEvent, StateCorrupt, ItemUpdateCorrupt, DevServicesError,
                                   WorkerFailed, ServiceUnavailable])
def test_service_errors_are_streamrec_errors(error: type[Exception]) -> None:
    assert issubclass(error, StreamrecError)


@pytest.mark.parametrize("error", [UnknownIdError, InvalidInputError, DatasetError, RiverNotInstalledError])
def test_model_errors_are_model_errors(error: type[Exception]) -> None:
    assert issubclass(error, ModelError)


def test_built_in_bases_are_kept_for_existing_handlers() -> None:
    assert issubclass(SettingsError, ValueError) and issubclass(WorkerFailed, RuntimeError)
    with pytest.raises(StreamrecError):  # a bad setting is caught by the root too
        Settings.from_env({"STREAMREC_TOP_N": "0"})
