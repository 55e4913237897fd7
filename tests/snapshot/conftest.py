"""Fixtures of the store contract suite: one store per backend (local directory, memory://)."""

from __future__ import annotations

import pytest

import chanbatch


@pytest.fixture
def store(store_url: str) -> chanbatch.Store:
    """An empty store, once on a local directory and once on ``memory://``."""
    return chanbatch.Store(store_url)


@pytest.fixture
def local_store(local_store_url: str) -> chanbatch.Store:
    """An empty store on a local directory, for tests that need real files and mtimes."""
    return chanbatch.Store(local_store_url)
