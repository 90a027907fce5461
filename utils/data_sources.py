"""The real datasets that come through a library: torchvision, and Hugging Face `datasets` from the Hub.

`utils.data.load()` calls these at the laptop and full presets. Before anything is downloaded, one short
probe asks whether the host answers, so that "no network" fails in seconds with the way forward instead
of after a minute of retries; damaged cached files are named and deleted. Nothing happens at import time.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

from utils.data import DatasetInfo, data_dir, is_network_error, offline_error
from utils.network import hf_endpoint, hub_switched_off, reachable, why_unreachable


def _reraise_offline(name: str, source: str, exc: Exception) -> None:
    """Turn a 'no network' failure of a library loader into OfflineError; leave other errors alone."""
    if is_network_error(exc):
        raise offline_error(name, source, f"{type(exc).__name__}: {exc}") from exc


def load_torchvision(info: DatasetInfo, split: str) -> Any:
    """The real torchvision dataset: (image (C,H,W) in [0,1], int label) pairs, with `.classes`."""
    import torchvision
    from torchvision import transforms

    dataset_class = getattr(torchvision.datasets, info.source.rsplit(".", 1)[1])
    root = data_dir()
    if issubclass(dataset_class, torchvision.datasets.MNIST):  # FashionMNIST too: same file format
        _delete_damaged_idx_files(root / dataset_class.__name__ / "raw")
    kwargs = dict(root=str(root), train=split == "train", transform=transforms.ToTensor())
    try:
        return dataset_class(download=False, **kwargs)  # already in the cache: no network needed
    except RuntimeError:  # "Dataset not found" (or, for CIFAR, failed its MD5 check): download it
        pass
    mirrors = getattr(dataset_class, "mirrors", None) or [dataset_class.url]
    if not any(reachable(url) for url in mirrors):
        raise offline_error(info.name, mirrors[0], why_unreachable(mirrors[0]))
    try:
        return dataset_class(download=True, **kwargs)
    except Exception as exc:
        _reraise_offline(info.name, info.source, exc)
        raise


def _idx_file_problem(path: Path) -> str:
    """Why the MNIST-format (idx) file at `path` cannot be read, or "" if its header and size agree."""
    with open(path, "rb") as f:
        header = f.read(16)
    magic = int.from_bytes(header[:4], "big")
    if magic not in (2049, 2051):  # 0x0801 labels (1 dimension), 0x0803 images (3 dimensions), uint8
        return f"it does not start like an MNIST file (magic number {magic}, expected 2049 or 2051)"
    n_dims = magic & 0xFF
    dims = [int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(n_dims)]
    expected = 4 + 4 * n_dims + math.prod(dims)  # magic, one 4-byte size per dimension, one byte per value
    size = path.stat().st_size
    if size != expected:
        return f"it has {size:,} bytes where its header promises {expected:,} (a cut download?)"
    return ""


def _delete_damaged_idx_files(raw: Path) -> None:
    """Delete cached MNIST files that cannot be read, saying which and why; torchvision fetches them again."""
    for path in sorted(raw.glob("*-ubyte")) if raw.is_dir() else []:
        problem = _idx_file_problem(path)
        if problem:
            path.unlink()
            print(f"{path} is damaged: {problem}. Deleted it; it is extracted or downloaded again.")


def to_tensors(dataset: Any) -> Any:
    """A torchvision image dataset as tensors in memory: same items, no per-item image decoding."""
    import torch

    from utils.data_standins import ImageTensorDataset  # imported here: it imports this module

    images = torch.as_tensor(dataset.data)  # uint8: MNIST (N, H, W), CIFAR (N, H, W, C)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # (N, C, H, W)
    images = images.float().div_(255).contiguous()  # what ToTensor does to each image: 0..255 → [0, 1]
    return ImageTensorDataset(images, torch.as_tensor(dataset.targets).tolist(), list(dataset.classes))


def load_huggingface(info: DatasetInfo, split: str) -> Any:
    """The real `datasets.Dataset` for `split`; with no network (or the Hub switched off) its cached copy."""
    import datasets

    cache, source = data_dir() / "huggingface", f"the Hugging Face Hub ({info.source})"
    switched_off = hub_switched_off("HF_DATASETS_OFFLINE")
    no_network = not switched_off and not reachable(hf_endpoint())
    if no_network and not _hf_cached(info.source, cache):
        raise offline_error(info.name, source, why_unreachable(hf_endpoint()))
    try:
        # Offline this reads the cache, or fails at once: no minute of retries.
        with _hub_offline(switched_off or no_network):
            return datasets.load_dataset(info.source, info.config or None, split=split, cache_dir=str(cache))
    except Exception as exc:
        _reraise_offline(info.name, source, exc)
        raise


def _hf_cached(hub_id: str, cache: Path) -> bool:
    """True if `datasets` has prepared `hub_id` in `cache` (<owner>___<name>/<config>/<version>/<hash>)."""
    from datasets.naming import camelcase_to_snakecase

    owner, _, name = hub_id.rpartition("/")
    folder = cache / "___".join(filter(None, [owner, camelcase_to_snakecase(name)]))
    return any(path.is_dir() for path in folder.glob("*/*/*"))


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Within the block, `datasets` and `huggingface_hub` act as if HF_HUB_OFFLINE=1 when `offline`."""
    import datasets
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    if offline:  # both read HF_HUB_OFFLINE once, at import: set the values they read it into
        datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved
