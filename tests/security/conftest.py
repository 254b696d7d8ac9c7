"""Fixtures of the security tests: the seeded world (tests/security/world.py)."""

import pytest

from .world import World, world_seed


@pytest.fixture
def world(db) -> World:
    return world_seed()
