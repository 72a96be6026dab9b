"""Peer tools the tests run against weightgate, installed by scripts/ and cached."""
