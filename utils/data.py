"""Datasets of the course: where each really comes from, and its offline stand-in.

`load(name, split)` hands back the real dataset, or — in the smoke preset or with COURSE_OFFLINE=1 — a
small stand-in of the SAME kind (same type, same columns, same item shapes), so the notebook code after
the call never changes. Every stand-in announces itself in one printed line; a real download that fails
raises `OfflineError` saying what, from where, and how to continue. Nothing happens at import time.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from utils.network import reachable, why_unreachable
from utils.runtime import cache_dir, use_standins

KINDS = ("torchvision", "huggingface", "url", "bundled", "generated")
"""Where a dataset comes from; only the first three need a network, and only they have stand-ins."""


@functools.lru_cache(maxsize=1)
def offline_text() -> str:
    """~465 KB of English prose that ships with Python (pydoc's help topics), in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics))


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset of the course: its source, licence, offline stand-in and where it is used."""

    name: str  # registry key
    description: str
    kind: str  # one of KINDS
    source: str  # torchvision class, Hub id, URL, or the function that ships/generates it
    licence: str
    standin: str  # what replaces it offline / in smoke ("" for bundled and generated data)
    used_in: tuple[str, ...]  # module folders
    sha256: str = ""  # for kind == "url"
    splits: tuple[str, ...] = ("train", "test")  # the split names load() accepts
    config: str = ""  # Hugging Face configuration name, where the dataset has several


_SKLEARN = "BSD-3-Clause (scikit-learn); the data's own origin is in the function's docstring"
_HF_LICENCE = "see source page"

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist", "70,000 handwritten digits, 28×28 grey", "torchvision",
                    "torchvision.datasets.MNIST", "CC BY-SA 3.0 (as commonly stated; see source)",
                    "sklearn digits (8×8) upscaled and padded to 1×28×28", ("01_deep_learning",)),
        DatasetInfo("fashion_mnist", "70,000 Zalando clothing images, 28×28 grey", "torchvision",
                    "torchvision.datasets.FashionMNIST", "MIT",
                    "sklearn digits upscaled to 1×28×28 (digits standing in for clothes)",
                    ("01_deep_learning",)),
        DatasetInfo("cifar10", "60,000 colour photos of 10 classes, 32×32", "torchvision",
                    "torchvision.datasets.CIFAR10", "no explicit licence; see source",
                    "generated 3×32×32 coloured shapes, 5 shapes × 2 colour families",
                    ("01_deep_learning", "04_images_multimodal")),
        DatasetInfo("tiny_shakespeare", "1.1 MB of Shakespeare's plays (char-rnn)", "url",
                    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
                    "input.txt", "public-domain text; repository MIT",
                    "offline_text(): Python's own help pages, ~465 KB of English",
                    ("01_deep_learning", "02_transformers", "05_frontier"),
                    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                    splits=("train",)),
        DatasetInfo("python_docs", "Python's pydoc help topics as one text; also the RAG corpus",
                    "bundled", "pydoc_data.topics (stdlib)", "PSF License", "",
                    ("02_transformers", "03_llm_apps"), splits=("train",)),
        DatasetInfo("python_docs_queries", "188 learner questions about Python, each labelled with the "
                    "pydoc help topics that answer it (an evaluation set for search and RAG)", "bundled",
                    "utils/data_files/python_docs_queries.json (written for this course)",
                    "CC BY 4.0 (queries, labels); the evidence quotes are from Python's docs: PSF License", "",
                    ("03_llm_apps",), splits=("test",)),
        DatasetInfo("rag_eval", "Hand-labelled (sentence, source, supported) judgements for checking RAG "
                    "faithfulness, and questions the help topics cannot answer", "bundled",
                    "utils/data_files/rag_eval.json (written for this course)",
                    "CC BY 4.0 (sentences, questions, labels); the source texts are from Python's docs: PSF License",
                    "", ("03_llm_apps",), splits=("faithfulness", "unanswerable")),
        DatasetInfo("imdb", "50,000 movie reviews labelled neg/pos (columns text, label)",
                    "huggingface", "stanfordnlp/imdb", _HF_LICENCE,
                    "templated positive/negative review sentences", ("02_transformers",)),
        DatasetInfo("alpaca", "52,000 instructions with responses (instruction, input, output, text)",
                    "huggingface", "tatsu-lab/alpaca", "CC BY-NC 4.0",
                    "generated reverse / count / arithmetic / sort tasks with correct outputs",
                    ("03_llm_apps", "05_frontier"), splits=("train",)),
        # Assumed columns of trl-lib/ultrafeedback_binarized: chosen and rejected are conversations
        # (lists of {"role", "content"}) whose first turn is the prompt — trl's "implicit prompt" form —
        # plus score_chosen and score_rejected.
        DatasetInfo("preference", "UltraFeedback preference pairs (chosen, rejected, scores)",
                    "huggingface", "trl-lib/ultrafeedback_binarized", "MIT (UltraFeedback); see source",
                    "generated arithmetic questions: chosen is correct, rejected is wrong",
                    ("05_frontier",)),
        DatasetInfo("digits", "1,797 handwritten digits, 8×8", "bundled",
                    "sklearn.datasets.load_digits", _SKLEARN, "",
                    ("00_prerequisites", "01_deep_learning"), splits=("train",)),
        DatasetInfo("iris", "150 iris flowers, 4 measurements, 3 species", "bundled",
                    "sklearn.datasets.load_iris", _SKLEARN, "", ("00_prerequisites",), splits=("train",)),
        DatasetInfo("wine", "178 wines, 13 chemical measurements, 3 cultivars", "bundled",
                    "sklearn.datasets.load_wine", _SKLEARN, "", ("00_prerequisites",), splits=("train",)),
        DatasetInfo("breast_cancer", "569 tumours, 30 features, benign/malignant", "bundled",
                    "sklearn.datasets.load_breast_cancer", _SKLEARN, "", ("00_prerequisites",),
                    splits=("train",)),
        DatasetInfo("diabetes", "442 patients, 10 features, disease progression (regression)",
                    "bundled", "sklearn.datasets.load_diabetes", _SKLEARN, "", ("00_prerequisites",),
                    splits=("train",)),
        DatasetInfo("sample_images", "two colour photos (china, flower), 427×640", "bundled",
                    "sklearn.datasets.load_sample_images", "CC BY 2.0 (see the function's docstring)", "",
                    ("00_prerequisites",), splits=("train",)),
        DatasetInfo("faces", "200 grey face crops (100 faces, 100 non-faces), 25×25", "bundled",
                    "skimage.data.lfw_subset", "see source (Labeled Faces in the Wild subset)", "",
                    ("01_deep_learning", "05_frontier"), splits=("train",)),
        DatasetInfo("mnist1d", "MNIST-1D: 5,000 one-dimensional digit signals of length 40",
                    "generated", "mnist1d.data.make_dataset", "Apache-2.0 (mnist1d package)", "",
                    ("01_deep_learning",), splits=("train", "test")),
        DatasetInfo("two_moons", "1,000 2-D points in two interleaved half circles", "generated",
                    "sklearn.datasets.make_moons", _SKLEARN, "", ("00_prerequisites", "01_deep_learning"),
                    splits=("train",)),
        DatasetInfo("swiss_roll", "1,000 3-D points on a rolled-up sheet", "generated",
                    "sklearn.datasets.make_swiss_roll", _SKLEARN, "", ("01_deep_learning",),
                    splits=("train",)),
        DatasetInfo("gaussian_ring", "2,000 2-D points from 8 Gaussians on a circle (GAN modes)",
                    "generated", "utils.data.gaussian_ring", "course code (this repository)", "",
                    ("01_deep_learning", "04_images_multimodal"), splits=("train",)),
        DatasetInfo("facades", "CMP facades: paired photo / label-map images (imageA, imageB)",
                    "huggingface", "huggan/facades", _HF_LICENCE,
                    "generated 64×64 paired 'photos' and their flat label maps",
                    ("04_images_multimodal",), splits=("train",)),
        DatasetInfo("horse2zebra", "unpaired horse (imageA) and zebra (imageB) photos", "huggingface",
                    "huggan/horse2zebra", _HF_LICENCE,
                    "generated 64×64 unpaired plain blobs (A) and striped blobs (B)",
                    ("04_images_multimodal",), splits=("train",)),
        DatasetInfo("speech", "73 LibriSpeech utterances, 16 kHz (file, audio, text, ids)",
                    "huggingface", "hf-internal-testing/librispeech_asr_dummy", "CC BY 4.0 (LibriSpeech)",
                    "generated 16 kHz sine-tone clips described in text",
                    ("04_images_multimodal",), splits=("validation",), config="clean"),
    )
}


class OfflineError(RuntimeError):
    """A real dataset was needed but could not be downloaded; the message says how to continue."""


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for `name`; ValueError listing the known names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name]


def data_dir() -> Path:
    """Where real datasets are cached: cache_dir()/"data"."""
    path = cache_dir() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------- downloads

# Matched by class name along the MRO so that we need not import requests / httpx / huggingface_hub
# just to recognise their "no network" exceptions.
_NETWORK_ERRORS = {"URLError", "ConnectionError", "TimeoutError", "timeout", "gaierror", "IncompleteRead",
                   "RemoteDisconnected", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
                   "ConnectError", "TimeoutException", "Timeout"}


def is_network_error(exc: BaseException | None) -> bool:
    """True if `exc`, or an exception it was raised from, means the network could not be used."""
    while exc is not None:
        if type(exc).__name__ == "HTTPError":  # the server answered (404, 403…): not an offline problem
            return False
        if any(cls.__name__ in _NETWORK_ERRORS for cls in type(exc).__mro__):
            return True
        # torchvision's MNIST tries every mirror, then raises a bare RuntimeError with this text.
        if isinstance(exc, RuntimeError) and str(exc).startswith("Error downloading"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def offline_error(name: str, source: str, reason: object) -> OfflineError:
    """The one clear message for 'the real data needs a network we do not have'."""
    standin = DATASETS[name].standin if name in DATASETS else ""
    standin = f" ({standin})" if standin else ""
    return OfflineError(
        f"Could not download dataset {name!r} from {source}: {reason}. Either connect to the internet "
        f"and re-run, or set COURSE_OFFLINE=1 (or COURSE_PRESET=smoke) to use the offline stand-in{standin}."
    )


def sha256_of(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks (no whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stream(url: str, out: BinaryIO, timeout: float) -> str:
    """Copy `url` into `out` chunk by chunk (no whole file in memory); returns the SHA-256 hex digest."""
    digest, received = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        expected = response.headers.get("Content-Length")
        for chunk in iter(lambda: response.read(1 << 16), b""):
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
    # read() returns b"" when the server hangs up early, so a cut transfer must be caught by counting.
    if expected is not None and received != int(expected):
        raise http.client.IncompleteRead(b"", int(expected) - received)
    return digest.hexdigest()


def download(url: str, sha256: str, dest: Path, timeout: float = 30, *, name: str = "") -> Path:
    """Fetch `url` to `dest`, verify its SHA-256, then move it into place atomically; returns `dest`."""
    sha256 = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"sha256 must be 64 hex digits; got {sha256!r}.")
    dest = Path(dest)
    if dest.is_file():
        actual = sha256_of(dest)
        if actual == sha256:
            return dest  # already here and intact: no network needed
        dest.unlink()  # damaged or stale: never leave a file that fails its checksum in the cache
        print(f"{dest} failed its SHA-256 check (expected {sha256}, got {actual}): deleted it; "
              f"downloading it again from {url}")
    if url.startswith(("http://", "https://")) and not reachable(url):  # no network: say so at once
        raise offline_error(name or dest.name, url, why_unreachable(url))
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file sits beside `dest` so that os.replace is a rename on one file system: atomic,
    # so `dest` is either absent or complete and verified — never half written.
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                actual = _stream(url, out, timeout)
            except Exception as exc:
                if is_network_error(exc):
                    raise offline_error(name or dest.name, url, f"{type(exc).__name__}: {exc}") from exc
                raise
        if actual != sha256:
            raise ValueError(f"Checksum mismatch for {url}: expected sha256 {sha256}, "
                             f"got {actual}. The file was not kept.")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


# ---------------------------------------------------------------------------------------------- loading


def load(name: str, split: str = "train", preset: str | None = None, *, as_tensors: bool = True) -> Any:
    """The dataset `name` (real, or its stand-in in smoke/offline mode) for `split`; same kind either way.

    Real torchvision image datasets come as tensors held in memory (`as_tensors=True`): the same
    (image (C,H,W) float in [0,1], int label) items and `.classes`/`.targets` as torchvision's own
    dataset, about 15x faster to iterate because no image is decoded per item. `as_tensors=False` gives
    torchvision's dataset object itself (for its `transform=` argument, say).
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"Dataset {name!r} has no split {split!r}. Allowed: {', '.join(info.splits)}.")
    if info.kind in ("bundled", "generated"):
        return _LOCAL[name](split)  # always the real thing: it ships in a package or is generated
    if use_standins(preset):
        from utils.data_standins import STANDINS  # imported here: it imports this module

        data, detail = STANDINS[name](split)
        print(f"stand-in: {name} → {detail}; set COURSE_PRESET=laptop (COURSE_OFFLINE unset) with a "
              f"network for the real {info.source}")
        return data
    if info.kind in ("torchvision", "huggingface"):
        from utils import data_sources  # imported here: it imports this module

        if info.kind == "huggingface":
            return data_sources.load_huggingface(info, split)
        dataset = data_sources.load_torchvision(info, split)
        return data_sources.to_tensors(dataset) if as_tensors else dataset
    path = download(info.source, info.sha256, data_dir() / f"{name}.txt", name=name)
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------- bundled and generated data


def gaussian_ring(n: int = 2000, n_modes: int = 8, radius: float = 2.0, std: float = 0.02,
                  seed: int = 0) -> tuple["np.ndarray", "np.ndarray"]:  # noqa: F821
    """`n` 2-D points from `n_modes` Gaussians evenly spaced on a circle: (x (n, 2) float32, mode (n,))."""
    import numpy as np

    if n < 1 or n_modes < 1 or radius <= 0 or std <= 0:
        raise ValueError(f"gaussian_ring needs n ≥ 1, n_modes ≥ 1, radius > 0, std > 0; got n={n}, "
                         f"n_modes={n_modes}, radius={radius}, std={std}.")
    rng = np.random.default_rng(seed)
    mode = rng.integers(0, n_modes, size=n)
    angle = 2 * np.pi * mode / n_modes
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (centres + std * rng.standard_normal((n, 2))).astype(np.float32), mode


def _sklearn_bundle(function: str) -> Callable[[str], Any]:
    def load_bundle(split: str) -> Any:
        import sklearn.datasets

        return getattr(sklearn.datasets, function)()

    return load_bundle


def _faces(split: str) -> Any:
    from skimage.data import lfw_subset

    return lfw_subset()  # (200, 25, 25) float in [0, 1]: 100 faces then 100 non-faces


def _mnist1d(split: str) -> tuple[Any, Any]:
    import numpy as np
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # make_dataset seeds NumPy's global generator; put it back after
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return (data["x"], data["y"]) if split == "train" else (data["x_test"], data["y_test"])


def _two_moons(split: str) -> tuple[Any, Any]:
    from sklearn.datasets import make_moons

    return make_moons(n_samples=1000, noise=0.1, random_state=0)


def _swiss_roll(split: str) -> tuple[Any, Any]:
    from sklearn.datasets import make_swiss_roll

    return make_swiss_roll(n_samples=1000, noise=0.1, random_state=0)


def _python_docs_queries(split: str) -> list[dict[str, Any]]:
    """The labelled questions over pydoc's topics: [{id, query, relevant: [topic...], evidence: [quote...]}]."""
    import json

    path = Path(__file__).with_name("data_files") / "python_docs_queries.json"  # its format is described inside
    return json.loads(path.read_text(encoding="utf-8"))["queries"]


def _rag_eval(split: str) -> list[Any]:
    """03.06's hand-made sets: split "faithfulness" ([{id, source_id, source, sentence, supported, origin}]) or
    "unanswerable" ([question, ...])."""
    import json

    path = Path(__file__).with_name("data_files") / "rag_eval.json"  # how they were made is described inside
    return json.loads(path.read_text(encoding="utf-8"))[split]


_LOCAL: dict[str, Callable[[str], Any]] = {
    "python_docs": lambda split: offline_text(),
    "python_docs_queries": _python_docs_queries,
    "rag_eval": _rag_eval,
    **{name: _sklearn_bundle(f"load_{name}")
       for name in ("digits", "iris", "wine", "breast_cancer", "diabetes", "sample_images")},
    "faces": _faces,
    "mnist1d": _mnist1d,
    "two_moons": _two_moons,
    "swiss_roll": _swiss_roll,
    "gaussian_ring": lambda split: gaussian_ring(),
}
