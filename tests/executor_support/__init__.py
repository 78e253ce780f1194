"""Helpers for the executor tests: test plugins, a script subprocess tests run, a fake plugin."""
