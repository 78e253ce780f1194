"""cas: a content-addressed artifact repository for pipeline runs."""

__version__ = "0.1.0"
