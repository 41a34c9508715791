"""Fixtures shared by several API test modules; one definition each, so session scope means once."""

from tests.api.cloud_guest_runs import cloud_accounts
from tests.api.guest_runs import guest_runs
from tests.peers.gcp import gce, gcp_conn_info, gcs_url
from tests.peers.moto import moto_url

__all__ = ["cloud_accounts", "gce", "gcp_conn_info", "gcs_url", "guest_runs", "moto_url"]
