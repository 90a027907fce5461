"""utils.network: the one short probe that tells "no network" before a download library retries for a minute.

Nothing here needs the network: the probes go to sockets on 127.0.0.1 that the tests open and close.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from utils import network
from utils.servers import free_port as closed_port  # free now: nobody listens there


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch):
    monkeypatch.setattr(network, "_REACHABLE", set())
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def listener():
    """A socket listening on 127.0.0.1; yields (port, count of connections accepted so far)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)  # accept() wakes up often enough to see that the test is over
    accepted, done = [], threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    done.set()
    thread.join(5)
    server.close()


def _hung_connection(*args, **kwargs):
    """socket.create_connection on a network that drops packets: nothing for 5 s, then a timeout."""
    time.sleep(5)
    raise TimeoutError("timed out")


def test_a_listening_host_is_reachable_and_asked_only_once(listener):
    port, accepted = listener
    assert network.reachable(f"http://127.0.0.1:{port}/some/file")
    assert network.reachable(f"http://127.0.0.1:{port}/other")
    time.sleep(0.2)
    assert len(accepted) == 1  # the second answer came from memory


def test_a_closed_port_is_not_reachable_and_is_asked_again_next_time():
    url = f"https://127.0.0.1:{closed_port()}"
    start = time.perf_counter()
    assert not network.reachable(url)
    assert time.perf_counter() - start < 1
    assert not network._REACHABLE  # not remembered: connecting and re-running must work
    assert network.why_unreachable(url) == "no network (could not connect to 127.0.0.1 within 2 s)"


def test_a_host_that_never_answers_costs_only_the_timeout(monkeypatch):
    # A name lookup or a connection that hangs (a firewall that drops packets) must not hang the probe.
    monkeypatch.setattr(socket, "create_connection", _hung_connection)
    start = time.perf_counter()
    assert not network.reachable("https://huggingface.co", timeout=0.3)
    assert time.perf_counter() - start < 2


def test_the_probe_goes_to_the_proxy_when_one_is_set(listener, monkeypatch):
    port, accepted = listener
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
    assert network.reachable("https://no-such-host.invalid/file")  # the proxy answers for it
    monkeypatch.setenv("no_proxy", "no-such-host.invalid")
    assert not network.reachable("https://no-such-host.invalid/file", timeout=0.5)


def test_hf_endpoint_follows_the_environment(monkeypatch):
    assert network.hf_endpoint() == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example.org/")
    assert network.hf_endpoint() == "https://hf-mirror.example.org"


def test_hub_switched_off_reads_the_hf_flags(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert not network.hub_switched_off("TRANSFORMERS_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert network.hub_switched_off("TRANSFORMERS_OFFLINE") and not network.hub_switched_off()
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert network.hub_switched_off()


def test_a_url_without_host_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a URL with a host.*got 'huggingface.co'"):
        network.reachable("huggingface.co")
