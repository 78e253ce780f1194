"""Test helpers and pytest fixtures for the cas package."""
