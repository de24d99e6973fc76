"""Fixtures shared by the tests of real bundled models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engines.embeddings import E5Engine


@pytest.fixture(scope="session")
def e5_engine() -> Iterator[E5Engine]:
    """The bundled embeddings model, loaded once for every test that needs it."""
    engine = E5Engine()
    engine.load()
    yield engine
    engine.unload()
