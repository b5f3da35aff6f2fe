"""Every integration test starts real parts (vLLM, Ray, moto, Ray Train, subprocess CLIs): all are marked slow,
so `pytest -m "not slow"` runs only the pure unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
