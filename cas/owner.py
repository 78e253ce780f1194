"""Who is executing a run: an owner record that tells a live executor from a dead one.

``runs/{run_id}/owner.json`` holds the host, boot id, pid and the process's start
time. An owner is alive only if all four still match a running process here; a
record from another host is assumed alive (no lease yet), one from this host
whose process is gone (or was replaced after a reboot or pid reuse) is dead.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import orjson

from cas.errors import NotFoundError
from cas.objects import Backend

OWNER = "owner.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def current_owner() -> dict[str, Any]:
    """This process as an owner record."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid": pid,
        "start": _start_time(pid),
    }


def is_alive(owner: dict[str, Any]) -> bool:
    """Whether the process an owner record names is still running."""
    if owner.get("host") != socket.gethostname():
        return True
    if owner.get("boot_id") != _boot_id():
        return False
    pid = owner.get("pid")
    return isinstance(pid, int) and _start_time(pid) == owner.get("start") != ""


def read_owner(backend: Backend, key: str) -> dict[str, Any] | None:
    """The owner record at `key`, or None."""
    try:
        data = orjson.loads(backend.read(key))
    except (NotFoundError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
