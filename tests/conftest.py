"""Shared pytest configuration: load the real-service fixtures from cas.testing.services."""

pytest_plugins = ["cas.testing.services"]
