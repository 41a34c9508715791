"""The AWS provider tests run against a real moto server (fixtures in ``tests/peers/moto.py``)."""

from tests.peers.moto import conn_info, ebs, ec2, fast_polling, guest_volumes, moto_url, provider, recorder, subnet

__all__ = ["conn_info", "ebs", "ec2", "fast_polling", "guest_volumes", "moto_url", "provider", "recorder", "subnet"]
