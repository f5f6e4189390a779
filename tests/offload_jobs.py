"""Jobs for tests/test_offload.py: a worker process imports this module to run them, so it
imports nothing heavy (the tests put this folder on the workers' `PYTHONPATH`)."""

from __future__ import annotations

import os
import signal


def echo(data: bytes, more: str) -> tuple[bytes, str]:
    return data[::-1], more


def wait_for_a_signal(data: bytes) -> tuple[bytes, None]:
    signal.pause()
    return b"", None


def die(data: bytes) -> tuple[bytes, None]:
    os._exit(3)
