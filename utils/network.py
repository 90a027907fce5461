"""Is the network there? One short connection attempt per host, so that a download with no network
fails in a second with a way forward, instead of retrying for a minute.

Used by utils.hub and utils.data before they download; nothing happens at import time.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request

PROBE_TIMEOUT = 2.0
"""Seconds the network probe waits; a reachable host answers in a small fraction of that."""

_REACHABLE: set[tuple[str, int]] = set()
"""The (host, port) pairs that answered in this process: each is asked once."""


def hf_endpoint() -> str:
    """The Hugging Face Hub that downloads use: $HF_ENDPOINT if set, else https://huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def reachable(url: str, timeout: float | None = None) -> bool:
    """True if a connection to `url`'s host (or to the proxy set for it) opens within `timeout` seconds.

    One short probe per host and process: it tells "no network" in at most `timeout` seconds, where the
    download libraries retry for a minute before they give up. A host that answered is remembered; one that
    did not is asked again next time, so that connecting and re-running a cell works without a restart.
    `timeout` defaults to PROBE_TIMEOUT.
    """
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"reachable() needs a URL with a host, like https://huggingface.co; got {url!r}.")
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):  # the download would go through the proxy
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or host, proxy_parts.port or 80
    if (host, port) not in _REACHABLE and _connects(host, port, timeout):
        _REACHABLE.add((host, port))
    return (host, port) in _REACHABLE


def why_unreachable(url: str, timeout: float | None = None) -> str:
    """The reason to give when reachable(url) was False: the host, and how long it was given."""
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    return f"no network (could not connect to {urllib.parse.urlsplit(url).hostname} within {timeout:g} s)"


def _connects(host: str, port: int, timeout: float) -> bool:
    """One TCP connection attempt (opened, then closed at once: nothing is sent)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # The name lookup inside create_connection has no timeout of its own: a thread bounds the whole probe.
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return result == [True]


def hub_switched_off(*names: str) -> bool:
    """True when HF_HUB_OFFLINE, or one of `names` (e.g. TRANSFORMERS_OFFLINE), is set to a yes value."""
    flags = (os.environ.get(name, "").strip().lower() for name in ("HF_HUB_OFFLINE", *names))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)
