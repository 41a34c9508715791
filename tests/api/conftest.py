"""Fixtures shared by several API test modules; one definition each, so session scope means once."""

from tests.api.guest_runs import guest_runs
from tests.peers.moto import moto_url

__all__ = ["guest_runs", "moto_url"]
