"""The offline stand-ins of `utils.data`: small, seeded datasets of the same kind as the real ones.

`utils.data.load()` uses them in the smoke preset or with COURSE_OFFLINE=1. Each builder takes a split and
returns (data, one-line description); `load()` prints that line, so a stand-in always announces itself.
"""

from __future__ import annotations

from typing import Any, Callable

from utils.data import offline_text

# ----------------------------------------------------------------------------------------- stand-ins
# Each builder takes a split and returns (data, one-line description). All are seeded: same call,
# same data. Train and test come from one generated pool, cut in two, so they never overlap.

MNIST_CLASSES = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
                 "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"]  # torchvision's names


class ImageTensorDataset:
    """Map-style dataset of (image FloatTensor (C,H,W) in [0,1], int label), like torchvision's.

    A DataLoader needs only __len__ and __getitem__, so this needs no torch import at module level.
    """

    def __init__(self, data: Any, targets: list[int], classes: list[str]) -> None:
        self.data, self.targets, self.classes = data, targets, classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.data[index], self.targets[index]

    def __repr__(self) -> str:
        return f"ImageTensorDataset({len(self)} images of shape {tuple(self.data.shape[1:])}, " \
               f"{len(self.classes)} classes)"


def _digits_28x28(split: str) -> ImageTensorDataset:
    """sklearn's 1,797 digits as 1×28×28 images in [0,1], split 80/20 stratified with a fixed seed."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    # MNIST centres each digit in a 20×20 box inside 28×28; frame the stand-in the same way.
    x = F.pad(F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False), (4, 4, 4, 4))
    train, test = train_test_split(np.arange(len(x)), test_size=0.2, random_state=0,
                                   stratify=digits.target)
    index = torch.as_tensor(train if split == "train" else test)
    return ImageTensorDataset(x[index].clamp(0, 1), digits.target[index.numpy()].tolist(), MNIST_CLASSES)


def _mnist_standin(split: str) -> tuple[ImageTensorDataset, str]:
    data = _digits_28x28(split)
    return data, f"sklearn digits upscaled to 28×28 ({len(data):,} {split} images)"


def _fashion_mnist_standin(split: str) -> tuple[ImageTensorDataset, str]:
    data = _digits_28x28(split)
    return data, f"sklearn digits upscaled to 28×28 standing in for Fashion-MNIST ({len(data):,} " \
                 f"{split} images; classes are digits, not clothes)"


SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOUR_FAMILIES = {"warm": ((0.75, 0.1, 0.0), (1.0, 0.6, 0.2)), "cool": ((0.0, 0.3, 0.6), (0.3, 0.8, 1.0))}


def _shape_mask(shape: str, dx: Any, dy: Any, r: Any) -> Any:
    """Boolean mask of `shape` of radius `r` at offsets (dx, dy) from its centre (NumPy broadcasting)."""
    import numpy as np

    dist = np.sqrt(dx**2 + dy**2)
    if shape == "circle":
        return dist <= r
    if shape == "square":
        return np.maximum(abs(dx), abs(dy)) <= 0.8 * r
    if shape == "triangle":  # apex up: half-width grows linearly from the apex to the base
        return (dy <= 0.8 * r) & (abs(dx) <= 0.6 * (dy + r))
    if shape == "cross":
        return ((abs(dx) <= r / 3) & (abs(dy) <= r)) | ((abs(dy) <= r / 3) & (abs(dx) <= r))
    return (dist <= r) & (dist >= 0.55 * r)  # ring


def _shapes_32x32(per_class: int = 250, seed: int = 0) -> tuple[Any, Any, list[str]]:
    """(N, 3, 32, 32) float32 images of coloured shapes on noisy grey backgrounds, labels, class names."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = [f"{family} {shape}" for shape in SHAPES for family in COLOUR_FAMILIES]
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    images, labels = [], []
    for label, name in enumerate(classes):
        family, shape = name.split()
        r = rng.uniform(6, 11, (per_class, 1, 1))
        cx, cy = rng.uniform(11, 21, (2, per_class, 1, 1))
        mask = _shape_mask(shape, xx - cx, yy - cy, r)[:, None]  # (n, 1, 32, 32)
        low, high = COLOUR_FAMILIES[family]
        colour = rng.uniform(low, high, (per_class, 3))[:, :, None, None]
        background = rng.uniform(0.2, 0.6, (per_class, 1, 1, 1))
        noise = 0.05 * rng.standard_normal((per_class, 3, 32, 32))
        images.append(np.clip(np.where(mask, colour, background) + noise, 0, 1))
        labels.append(np.full(per_class, label))
    order = rng.permutation(len(classes) * per_class)
    return np.concatenate(images)[order].astype(np.float32), np.concatenate(labels)[order], classes


def _cifar10_standin(split: str) -> tuple[ImageTensorDataset, str]:
    import torch

    images, labels, classes = _shapes_32x32()
    cut = int(0.8 * len(labels))  # 2,000 train / 500 test
    part = slice(None, cut) if split == "train" else slice(cut, None)
    data = ImageTensorDataset(torch.from_numpy(images[part]), labels[part].tolist(), classes)
    return data, f"generated 3×32×32 coloured shapes, 10 classes ({len(data):,} {split} images)"


def _tiny_shakespeare_standin(split: str) -> tuple[str, str]:
    text = offline_text()
    return text, f"offline_text(), Python's help pages ({len(text):,} characters of English)"


def _take_split(rows: list[dict], split: str, n_test: int, seed: int = 0) -> list[dict]:
    """Shuffle `rows` with a fixed seed, then the last `n_test` are the test split, the rest train."""
    import random

    rows = rows[:]
    random.Random(seed).shuffle(rows)
    return rows[-n_test:] if split == "test" else rows[:-n_test]


def _imdb_standin(split: str) -> tuple[Any, str]:
    import datasets

    from utils.review_standins import reviews

    rows = [{"text": row["text"], "label": row["label"]} for row in reviews(1200)]  # plain, negated, mixed
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    data = datasets.Dataset.from_list(_take_split(rows, split, n_test=200), features=features)
    return data, f"{len(data)} generated {split} reviews with negations and mixed verdicts, labels neg/pos " \
                 "(columns text, label)"


_ALPACA_PROMPT = ("Below is an instruction that describes a task{context}. Write a response that "
                  "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n{input}"
                  "### Response:\n{output}")
_WORDS = ("apple", "river", "music", "garden", "planet", "silver", "window", "forest", "yellow", "castle")


def _instruction_task(i: int, rng: Any) -> dict[str, str]:
    """One instruction with its correct answer; the task type cycles with `i`."""
    word, a, b = rng.choice(_WORDS), rng.randint(2, 99), rng.randint(2, 99)
    numbers = [rng.randint(1, 50) for _ in range(5)]
    task = [("Reverse the letters of the word.", word, word[::-1]),
            ("Count the letters in the word.", word, str(len(word))),
            ("Add the two numbers.", f"{a} and {b}", str(a + b)),
            (f"What is {a} times {b}?", "", str(a * b)),
            ("Sort the numbers from smallest to largest.", ", ".join(map(str, numbers)),
             ", ".join(map(str, sorted(numbers)))),
            ("Write the word in capital letters.", word, word.upper())][i % 6]
    instruction, input_, output = task
    text = _ALPACA_PROMPT.format(
        context=", paired with an input that provides further context" if input_ else "",
        instruction=instruction, input=f"### Input:\n{input_}\n\n" if input_ else "", output=output)
    return {"instruction": instruction, "input": input_, "output": output, "text": text}


def _alpaca_standin(split: str) -> tuple[Any, str]:
    import random

    import datasets

    rng = random.Random(0)
    data = datasets.Dataset.from_list([_instruction_task(i, rng) for i in range(300)])
    return data, f"{len(data)} generated reverse / count / arithmetic / sort tasks with correct outputs"


def _preference_standin(split: str) -> tuple[Any, str]:
    import random

    import datasets

    rng = random.Random(0)
    rows = []
    for a in range(2, 22):
        for b in range(2, 22):
            op, value = ("+", a + b) if (a + b) % 2 else ("×", a * b)
            wrong = value + rng.choice([-3, -2, -1, 1, 2, 3])
            prompt = [{"role": "user", "content": f"What is {a} {op} {b}?"}]
            rows.append({
                "chosen": prompt + [{"role": "assistant", "content": f"{a} {op} {b} = {value}."}],
                "rejected": prompt + [{"role": "assistant", "content": f"{a} {op} {b} = {wrong}."}],
                "score_chosen": float(rng.randint(7, 10)), "score_rejected": float(rng.randint(1, 5))})
    data = datasets.Dataset.from_list(_take_split(rows, split, n_test=100))
    return data, f"{len(data)} arithmetic {split} pairs, chosen correct and rejected wrong " \
                 "(columns chosen, rejected, score_chosen, score_rejected)"


_FACADE_LABELS = {"wall": (0, 0, 170), "window": (0, 85, 255), "door": (170, 0, 0)}  # label-map colours


def _facade_pair(rng: Any, size: int = 64) -> tuple[Any, Any]:
    """A 'photo' of a facade (windows on a textured wall, a door) and its flat label map, as uint8."""
    import numpy as np

    parts = np.zeros((size, size), dtype=int)  # 0 wall, 1 window, 2 door
    rows, cols = rng.integers(2, 5), rng.integers(2, 5)
    for top in np.linspace(6, size - 26, rows).astype(int):
        for left in np.linspace(6, size - 14, cols).astype(int):
            parts[top:top + 8, left:left + 7] = 1
    parts[size - 16:, size // 2 - 5:size // 2 + 5] = 2
    label_map = np.array(list(_FACADE_LABELS.values()), dtype=np.uint8)[parts]
    wall = rng.uniform(140, 220, 3)
    palette = np.stack([wall, rng.uniform(20, 70, 3), np.array([90.0, 50.0, 20.0])])
    photo = palette[parts] + rng.normal(0, 12, (size, size, 3))
    return np.clip(photo, 0, 255).astype(np.uint8), label_map


def _animal(rng: Any, striped: bool, size: int = 64) -> Any:
    """A body-shaped ellipse on grass: plain brown ('horse') or black-and-white striped ('zebra')."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy = rng.uniform(24, 40, 2)
    a, b = rng.uniform(14, 22), rng.uniform(8, 12)
    body = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1
    image = np.zeros((size, size, 3)) + rng.uniform([40, 110, 30], [80, 170, 60])  # grass
    if striped:
        period = rng.uniform(5, 8)
        stripes = (np.sin(2 * np.pi * xx / period) > 0)[..., None] * 235.0 + 10
        image = np.where(body[..., None], stripes, image)
    else:
        image = np.where(body[..., None], rng.uniform([110, 60, 20], [160, 100, 50]), image)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def _image_pairs(pairs: list[tuple[Any, Any]]) -> Any:
    """A datasets.Dataset with PIL image columns imageA and imageB, as the huggan datasets have."""
    import datasets
    from PIL import Image

    features = datasets.Features({"imageA": datasets.Image(), "imageB": datasets.Image()})
    return datasets.Dataset.from_dict(
        {"imageA": [Image.fromarray(a) for a, _ in pairs], "imageB": [Image.fromarray(b) for _, b in pairs]},
        features=features)


def _facades_standin(split: str) -> tuple[Any, str]:
    import numpy as np

    rng = np.random.default_rng(0)
    data = _image_pairs([_facade_pair(rng) for _ in range(48)])
    return data, f"{len(data)} generated 64×64 pairs: imageA a facade 'photo', imageB its label map"


def _horse2zebra_standin(split: str) -> tuple[Any, str]:
    import numpy as np

    rng = np.random.default_rng(0)
    # Unpaired, as in CycleGAN: row i's horse and zebra are drawn independently of each other.
    data = _image_pairs([(_animal(rng, striped=False), _animal(rng, striped=True)) for _ in range(48)])
    return data, f"{len(data)} generated 64×64 unpaired rows: imageA plain 'horses', imageB striped 'zebras'"


def _speech_standin(split: str) -> tuple[Any, str]:
    import datasets
    import numpy as np

    rate, notes = 16_000, (220, 247, 262, 294, 330, 349, 392, 440)
    t = np.arange(rate) / rate  # one second
    rows = []
    for i in range(24):
        hertz = notes[i % len(notes)] * (1 + i // len(notes))  # three octaves
        envelope = np.minimum(1, 10 * np.minimum(t, 1 - t))  # 0.1 s fade in/out: no clicks
        wave = (0.5 * envelope * np.sin(2 * np.pi * hertz * t)).astype(np.float32)
        rows.append({"file": f"tone-{i:03d}.wav", "text": f"A TONE AT {hertz} HERTZ",
                     "audio": {"path": f"tone-{i:03d}.wav", "array": wave, "sampling_rate": rate},
                     "speaker_id": 0, "chapter_id": 0, "id": f"tone-{i:03d}"})
    # Real LibriSpeech decodes audio to a NumPy array; format the stand-in's audio column the same way.
    data = datasets.Dataset.from_list(rows).with_format("numpy", columns=["audio"], output_all_columns=True)
    return data, f"{len(data)} generated one-second sine tones at {rate:,} Hz (columns " \
                 "file, audio, text, speaker_id, chapter_id, id)"


STANDINS: dict[str, Callable[[str], tuple[Any, str]]] = {
    "mnist": _mnist_standin,
    "fashion_mnist": _fashion_mnist_standin,
    "cifar10": _cifar10_standin,
    "tiny_shakespeare": _tiny_shakespeare_standin,
    "imdb": _imdb_standin,
    "alpaca": _alpaca_standin,
    "preference": _preference_standin,
    "facades": _facades_standin,
    "horse2zebra": _horse2zebra_standin,
    "speech": _speech_standin,
}
