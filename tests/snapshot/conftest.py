"""Fixtures of the store contract suite: one store per backend (local directory, memory://,
s3:// on a moto server)."""

from __future__ import annotations

import pytest

import chanbatch


@pytest.fixture
def store(store_url: str) -> chanbatch.Store:
    """An empty store, on a local directory, on ``memory://`` and on ``s3://`` (moto)."""
    return chanbatch.Store(store_url)


@pytest.fixture
def local_store(local_store_url: str) -> chanbatch.Store:
    """An empty store on a local directory, for tests that need real files and mtimes."""
    return chanbatch.Store(local_store_url)
