"""Tests for utils.data: the registry, atomic verified downloads, and every offline stand-in."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from utils import data, data_standins, network
from utils.servers import free_port as closed_port  # free now: nobody listens there

PAYLOAD = b"To be, or not to be, that is the question.\n" * 200
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    monkeypatch.setattr(network, "_REACHABLE", set())  # no probe result carried over from another test


def _hung_connection(*args, **kwargs):
    """socket.create_connection on a network that drops packets: nothing for 5 s, then a timeout."""
    time.sleep(5)
    raise TimeoutError("timed out")


# ------------------------------------------------------------------------------------------ registry


def test_every_registry_entry_is_well_formed():
    required = {"mnist", "fashion_mnist", "cifar10", "tiny_shakespeare", "python_docs", "imdb", "alpaca",
                "preference", "digits", "iris", "wine", "breast_cancer", "diabetes", "sample_images",
                "faces", "mnist1d", "two_moons", "swiss_roll", "gaussian_ring", "facades",
                "horse2zebra", "speech"}
    assert required <= set(data.DATASETS)
    for key, info in data.DATASETS.items():
        assert key == info.name and info.description and info.source and info.licence, key
        assert info.kind in data.KINDS, key
        assert info.used_in and all(re.fullmatch(r"0[0-5]_[a-z_]+", m) for m in info.used_in), key
        assert info.splits, key
        if info.kind == "url":
            assert re.fullmatch(r"[0-9a-f]{64}", info.sha256), key
        if info.kind in ("bundled", "generated"):
            assert info.standin == "" and key in data._LOCAL, key
        else:
            assert info.standin and key in data_standins.STANDINS, key


def test_dataset_info_and_bad_name():
    assert data.dataset_info("mnist").source == "torchvision.datasets.MNIST"
    with pytest.raises(ValueError, match="Known datasets:.*mnist"):
        data.dataset_info("nmist")


def test_bad_split_names_the_allowed_splits():
    with pytest.raises(ValueError, match="Allowed: train, test"):
        data.load("mnist", split="validation", preset="smoke")
    with pytest.raises(ValueError, match="Allowed: validation"):
        data.load("speech", split="train", preset="smoke")


def test_data_dir_is_under_the_course_cache(tmp_path):
    assert data.data_dir() == tmp_path / "cache" / "data" and data.data_dir().is_dir()


# ----------------------------------------------------------------------------------------- downloads


class _Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        if self.path == "/truncated":  # promise more bytes than are sent, then hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD) * 2))
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_verifies_and_places_the_file(server, tmp_path):
    dest = tmp_path / "dl" / "corpus.txt"
    assert data.download(f"{server}/good", PAYLOAD_SHA, dest) == dest
    assert dest.read_bytes() == PAYLOAD and _leftovers(dest.parent) == ["corpus.txt"]


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    dest = tmp_path / "corpus.txt"
    with pytest.raises(ValueError, match=f"{server}/good.*expected sha256 {'0' * 64}.*{PAYLOAD_SHA}"):
        data.download(f"{server}/good", "0" * 64, dest)
    assert _leftovers(tmp_path) == []


def test_interrupted_download_keeps_nothing(server, tmp_path):
    dest = tmp_path / "corpus.txt"
    with pytest.raises(data.OfflineError, match="IncompleteRead"):
        data.download(f"{server}/truncated", PAYLOAD_SHA, dest)
    assert _leftovers(tmp_path) == []


def test_existing_good_file_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "corpus.txt"
    dest.write_bytes(PAYLOAD)
    data.download(f"{server}/good", PAYLOAD_SHA, dest)
    assert _Handler.requests == []


def test_existing_bad_file_is_replaced(server, tmp_path):
    dest = tmp_path / "corpus.txt"
    dest.write_bytes(b"stale")
    data.download(f"{server}/good", PAYLOAD_SHA, dest)
    assert dest.read_bytes() == PAYLOAD and _Handler.requests == ["/good"]


def test_unreachable_url_raises_a_readable_offline_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/input.txt"
    with pytest.raises(data.OfflineError) as caught:
        data.download(url, PAYLOAD_SHA, tmp_path / "input.txt", timeout=5, name="tiny_shakespeare")
    message = str(caught.value)
    assert "'tiny_shakespeare'" in message and url in message
    assert "COURSE_OFFLINE=1" in message and "offline_text()" in message
    assert _leftovers(tmp_path) == []


def test_a_damaged_cached_file_is_named_and_deleted_even_when_offline(tmp_path, capsys):
    dest = tmp_path / "tiny_shakespeare.txt"
    dest.write_bytes(PAYLOAD[:-10])  # a cut file: fails its checksum
    with pytest.raises(data.OfflineError, match="'tiny_shakespeare'.*COURSE_OFFLINE=1"):
        data.download(f"http://127.0.0.1:{closed_port()}/input.txt", PAYLOAD_SHA, dest, name="tiny_shakespeare")
    assert not dest.exists()  # the bad file does not stay in the cache
    out = capsys.readouterr().out
    assert f"{dest} failed its SHA-256 check (expected {PAYLOAD_SHA}" in out and "deleted it" in out


def test_a_download_with_no_network_fails_within_the_probe_timeout(monkeypatch, tmp_path):
    # A network that drops packets: every connection hangs. The probe gives up after PROBE_TIMEOUT,
    # where urllib would wait the whole download timeout.
    monkeypatch.setattr(socket, "create_connection", _hung_connection)
    monkeypatch.setattr(network, "PROBE_TIMEOUT", 0.3)
    start = time.perf_counter()
    with pytest.raises(data.OfflineError, match="no network"):
        data.download("http://example.org/input.txt", PAYLOAD_SHA, tmp_path / "x.txt", timeout=10)
    assert time.perf_counter() - start < 3


def test_bad_sha256_argument():
    with pytest.raises(ValueError, match="64 hex digits"):
        data.download("http://127.0.0.1/x", "abc", Path("x"))


def test_hf_dataset_offline_fails_fast_with_a_readable_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(data.OfflineError) as caught:
        data.load("imdb", preset="laptop")
    assert time.perf_counter() - start < 15
    message = str(caught.value)
    assert "'imdb'" in message and "stanfordnlp/imdb" in message and "COURSE_OFFLINE=1" in message


# ----------------------------------------------------------------------------------------- stand-ins


def _load_announced(capsys, name, split="train", **kwargs):
    result = data.load(name, split, **kwargs)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stand-in: {name} → "), lines
    return result


@pytest.mark.parametrize("name, shape", [("mnist", (1, 28, 28)), ("fashion_mnist", (1, 28, 28)),
                                         ("cifar10", (3, 32, 32))])
def test_image_standins(capsys, name, shape):
    import torch
    from torch.utils.data import DataLoader

    train = _load_announced(capsys, name, preset="smoke")
    test = _load_announced(capsys, name, "test", preset="smoke")
    image, label = train[0]
    assert image.shape == shape and image.dtype == torch.float32 and isinstance(label, int)
    assert 0 <= image.min() and image.max() <= 1 and len(train.classes) == 10
    assert set(train.targets) == set(range(10)) and len(train) > len(test) > 0
    images, labels = next(iter(DataLoader(train, batch_size=8)))
    assert images.shape == (8, *shape) and labels.shape == (8,)
    flat = {x.numpy().tobytes() for x in train.data}
    assert not flat & {x.numpy().tobytes() for x in test.data}, "train and test overlap"
    again = _load_announced(capsys, name, preset="smoke")
    assert torch.equal(again.data, train.data) and again.targets == train.targets


def test_offline_flag_gives_standins_at_any_preset(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    text = _load_announced(capsys, "tiny_shakespeare", preset="laptop")
    assert text == data.offline_text()


def test_digits_standin_is_learnable(capsys):
    from sklearn.linear_model import LogisticRegression

    train = _load_announced(capsys, "mnist", preset="smoke")
    test = _load_announced(capsys, "mnist", "test", preset="smoke")
    model = LogisticRegression(max_iter=500).fit(train.data.flatten(1).numpy(), train.targets)
    assert model.score(test.data.flatten(1).numpy(), test.targets) > 0.9


def test_shapes_standin_is_learnable(capsys):
    from sklearn.linear_model import LogisticRegression

    train = _load_announced(capsys, "cifar10", preset="smoke")
    test = _load_announced(capsys, "cifar10", "test", preset="smoke")
    x = train.data[:, :, ::2, ::2].flatten(1).numpy()  # 16×16 is plenty to tell shapes apart, and 4× faster
    model = LogisticRegression(max_iter=1000).fit(x, train.targets)
    assert model.score(test.data[:, :, ::2, ::2].flatten(1).numpy(), test.targets) > 0.5  # chance: 0.1


HF_COLUMNS = {
    ("imdb", "train"): ["text", "label"],
    ("alpaca", "train"): ["instruction", "input", "output", "text"],
    ("preference", "train"): ["chosen", "rejected", "score_chosen", "score_rejected"],
    ("facades", "train"): ["imageA", "imageB"],
    ("horse2zebra", "train"): ["imageA", "imageB"],
    ("speech", "validation"): ["file", "text", "audio", "speaker_id", "chapter_id", "id"],
}


@pytest.mark.parametrize("name, split", list(HF_COLUMNS))
def test_huggingface_standins_have_the_real_columns(capsys, name, split):
    import datasets

    ds = _load_announced(capsys, name, split, preset="smoke")
    assert isinstance(ds, datasets.Dataset) and 20 <= len(ds) <= 1000
    assert sorted(ds.column_names) == sorted(HF_COLUMNS[name, split])
    again = _load_announced(capsys, name, split, preset="smoke")
    assert again.data.equals(ds.data)  # same Arrow table: byte-for-byte deterministic


def test_imdb_standin_splits_are_disjoint_and_balanced(capsys):
    train = _load_announced(capsys, "imdb", preset="smoke")
    test = _load_announced(capsys, "imdb", "test", preset="smoke")
    assert not set(train["text"]) & set(test["text"])
    assert set(train["label"]) == {0, 1} and train.features["label"].names == ["neg", "pos"]


def test_alpaca_standin_outputs_are_correct(capsys):
    rows = _load_announced(capsys, "alpaca", preset="smoke")
    for row in rows:
        if row["instruction"].startswith("Reverse"):
            assert row["output"] == row["input"][::-1]
        if row["instruction"].startswith("Add"):
            a, b = map(int, row["input"].split(" and "))
            assert row["output"] == str(a + b)
        assert row["text"].endswith(f"### Response:\n{row['output']}")


def test_preference_standin_chosen_is_right_and_rejected_wrong(capsys):
    pairs = _load_announced(capsys, "preference", "test", preset="smoke")
    for row in pairs:
        question = row["chosen"][0]["content"]
        assert row["rejected"][0]["content"] == question and row["chosen"][1]["role"] == "assistant"
        a, op, b = question.removeprefix("What is ").removesuffix("?").split()
        truth = int(a) + int(b) if op == "+" else int(a) * int(b)
        assert row["chosen"][1]["content"].endswith(f"= {truth}.")
        assert not row["rejected"][1]["content"].endswith(f"= {truth}.")
        assert row["score_chosen"] > row["score_rejected"]


def test_image_pair_standins_are_pil_images(capsys):
    row = _load_announced(capsys, "facades", preset="smoke")[0]
    assert row["imageA"].size == row["imageB"].size == (64, 64) and row["imageA"].mode == "RGB"


def test_speech_standin_is_a_tone_with_a_sampling_rate(capsys):
    row = _load_announced(capsys, "speech", "validation", preset="smoke")[0]
    wave, rate = row["audio"]["array"], row["audio"]["sampling_rate"]
    assert isinstance(wave, np.ndarray) and wave.shape == (rate,) and rate == 16_000
    hertz = int(row["text"].split()[3])
    assert np.argmax(np.abs(np.fft.rfft(wave))) == hertz  # 1 s of audio: bin k is k Hz


# --------------------------------------------------------------------------------- bundled / generated


def test_bundled_and_generated_data_are_real_and_silent(capsys):
    assert data.load("python_docs", preset="smoke") == data.offline_text()
    assert data.load("digits", preset="smoke").images.shape == (1797, 8, 8)
    assert data.load("faces").shape == (200, 25, 25)
    x, y = data.load("two_moons")
    assert x.shape == (1000, 2) and set(y) == {0, 1}
    x, mode = data.load("gaussian_ring")
    assert x.shape == (2000, 2) and set(mode) == set(range(8))
    assert np.allclose(np.linalg.norm(x, axis=1), 2.0, atol=0.15)
    assert capsys.readouterr().out == ""


def test_gaussian_ring_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_modes=0"):
        data.gaussian_ring(n_modes=0)


# --------------------------------------------------------------------- real datasets, made locally
# No network here: MNIST-format files are written into the cache by the test, and torchvision's mirrors
# point at a closed port, so that any attempt to download fails at once.

MNIST_FILES = {"train-images-idx3-ubyte": (2051, 6), "train-labels-idx1-ubyte": (2049, 6),
               "t10k-images-idx3-ubyte": (2051, 4), "t10k-labels-idx1-ubyte": (2049, 4)}


def _write_mnist(raw: Path) -> None:
    """Valid MNIST (idx) files with a few random 28×28 images and their labels."""
    rng = np.random.default_rng(0)
    raw.mkdir(parents=True, exist_ok=True)
    for name, (magic, n) in MNIST_FILES.items():
        if magic == 2051:
            body = struct.pack(">IIII", magic, n, 28, 28) + rng.integers(0, 256, (n, 28, 28), np.uint8).tobytes()
        else:
            body = struct.pack(">II", magic, n) + rng.integers(0, 10, n, np.uint8).tobytes()
        (raw / name).write_bytes(body)


@pytest.fixture
def no_mirrors(monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"http://127.0.0.1:{closed_port()}/mnist/"])


@pytest.fixture
def mnist_raw(no_mirrors) -> Path:
    raw = data.data_dir() / "MNIST" / "raw"
    _write_mnist(raw)
    return raw


def test_mnist_as_tensors_gives_torchvisions_items(mnist_raw):
    import torch

    fast, slow = data.load("mnist", preset="laptop"), data.load("mnist", preset="laptop", as_tensors=False)
    assert type(fast) is data_standins.ImageTensorDataset  # the same type as the stand-in
    assert len(fast) == len(slow) == 6 and fast.classes == slow.classes
    assert fast.targets == slow.targets.tolist()
    for i in range(len(slow)):
        (x, y), (x_ref, y_ref) = fast[i], slow[i]
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
        assert torch.equal(x, x_ref) and y == y_ref
    assert len(data.load("mnist", "test", preset="laptop")) == 4


def test_colour_images_as_tensors_match_totensor():
    import torch
    from PIL import Image
    from torchvision import transforms

    class Cifar:  # what to_tensors reads from a torchvision CIFAR dataset
        data = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
        targets, classes = [2, 0, 1], ["a", "b", "c"]

    from utils.data_sources import to_tensors

    dataset = to_tensors(Cifar())
    image, label = dataset[1]
    assert image.shape == (3, 32, 32) and label == 0 and dataset.classes == ["a", "b", "c"]
    assert torch.equal(image, transforms.ToTensor()(Image.fromarray(Cifar.data[1])))


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_a_damaged_mnist_file_is_named_and_deleted(mnist_raw, capsys, damage):
    bad = mnist_raw / "train-images-idx3-ubyte"
    good = bad.read_bytes()
    bad.write_bytes(np.random.default_rng(1).bytes(len(good)) if damage == "random bytes" else good[:-100])
    with pytest.raises(data.OfflineError, match="'mnist'.*no network.*COURSE_OFFLINE=1"):
        data.load("mnist", preset="laptop")  # deleted, so it must be downloaded again: no network here
    out = capsys.readouterr().out
    assert f"{bad} is damaged: it " in out and "Deleted it" in out
    assert not bad.exists() and (mnist_raw / "train-labels-idx1-ubyte").exists()  # only the bad file


def test_mnist_with_no_network_fails_fast_and_says_what_to_do(no_mirrors, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _hung_connection)  # hung network
    monkeypatch.setattr(network, "PROBE_TIMEOUT", 0.3)
    start = time.perf_counter()
    with pytest.raises(data.OfflineError, match="'mnist' from http://127.0.0.1.*no network.*COURSE_OFFLINE=1"):
        data.load("mnist", preset="laptop")
    assert time.perf_counter() - start < 4  # torchvision alone waits 5 s per mirror here


def _cache_hf_dataset(cache: Path, hub_id: str, config: str, rows: dict) -> None:
    """Put a prepared copy of `hub_id` into the `datasets` cache, in the layout a real download leaves."""
    import datasets

    source = cache.parent / "source.parquet"
    datasets.Dataset.from_dict(rows).to_parquet(str(source))
    built = datasets.load_dataset("parquet", data_files={"train": str(source)}, split="train",
                                  cache_dir=str(cache.parent / "build"))
    folder = Path(built.cache_files[0]["filename"]).parent
    owner, name = hub_id.split("/")
    target = cache / f"{owner}___{name}" / config / "0.0.0" / "0123abcd"
    shutil.copytree(folder, target)
    (target / "parquet-train.arrow").rename(target / f"{name}-train.arrow")
    info = json.loads((target / "dataset_info.json").read_text())
    (target / "dataset_info.json").write_text(json.dumps({**info, "config_name": config, "dataset_name": name}))


@pytest.fixture
def hub_unreachable(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")


def test_hf_dataset_with_no_network_fails_at_once_with_the_way_forward(hub_unreachable):
    start = time.perf_counter()
    with pytest.raises(data.OfflineError) as caught:
        data.load("alpaca", preset="laptop")
    assert time.perf_counter() - start < 5
    message = str(caught.value)
    assert "'alpaca'" in message and "tatsu-lab/alpaca" in message and "no network" in message
    assert "COURSE_OFFLINE=1" in message and "COURSE_PRESET=smoke" in message


def test_hf_dataset_with_no_network_comes_from_the_cache(hub_unreachable, monkeypatch):
    _cache_hf_dataset(data.data_dir() / "huggingface", "stanfordnlp/imdb", "plain_text",
                      {"text": ["good", "bad", "fine"], "label": [1, 0, 1]})
    monkeypatch.setattr(socket, "create_connection", _hung_connection)  # a network that drops packets
    monkeypatch.setattr(network, "PROBE_TIMEOUT", 0.3)
    start = time.perf_counter()
    reviews = data.load("imdb", preset="laptop")
    assert time.perf_counter() - start < 4  # the cache is read without trying the Hub (5 s per try here)
    assert reviews["text"] == ["good", "bad", "fine"]
