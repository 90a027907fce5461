"""02.01's byte-level BPE against Hugging Face `tokenizers`: same merges, same ids, lossless round trips.

The notebook's functions are loaded without running it (utils.notebooks.notebook_definitions). The library side
is built here independently, so a wrong byte table or tie rule in the notebook cannot fool both at once.
"""

import json
import random
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from utils.data import offline_text
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "02_transformers" / "01_tokenization.ipynb"
N_MERGES = 150


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK)


@pytest.fixture(scope="module")
def corpus():
    text = offline_text()  # Python's help pages: real English prose with code, always available offline
    return text[:30_000], text[-5_000:]  # (training slice, held-out slice)


def gpt2_byte_table() -> dict[int, str]:
    """GPT-2's bytes_to_unicode, written out independently of the notebook."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    others = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(others)}}


BYTE_OF = {c: b for b, c in gpt2_byte_table().items()}


def as_bytes(token: str) -> bytes:
    return bytes(BYTE_OF[c] for c in token)


def train_library(text: str, n_merges: int, special_tokens=()) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=len(special_tokens) + 256 + n_merges, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=list(special_tokens))
    tokenizer.train_from_iterator([text], trainer=trainer)
    return tokenizer


def library_merge_bytes(tokenizer: Tokenizer) -> list[tuple[bytes, bytes]]:
    pairs = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(as_bytes(t) for t in (p.split(" ") if isinstance(p, str) else p)) for p in pairs]


def our_merge_bytes(nb, merges) -> list[tuple[bytes, bytes]]:
    vocab = nb["build_vocab"](merges)
    return [(vocab[a], vocab[b]) for a, b in merges]


def library_byte_rank() -> list[int]:
    """The library sorts its 256-byte alphabet by GPT-2 character: position of each byte in that order."""
    order = sorted(range(256), key=gpt2_byte_table().get)
    return [order.index(b) for b in range(256)]


def random_text(rng: random.Random) -> str:
    blocks = [(0x20, 0x7E), (0x09, 0x0D), (0xA0, 0x24F), (0x370, 0x4FF), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF),
              (0x0, 0x10FFFF)]
    chars = (chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(0, 50)))
    # Cs: surrogates are not text. Cn: unassigned code points, on which the `regex` package and the library's
    # regex engine (different Unicode versions) may disagree about letters; they still round-trip (tested below).
    return "".join(c for c in chars if unicodedata.category(c) not in ("Cs", "Cn"))


@pytest.fixture(scope="module")
def trained(nb, corpus):
    train, _ = corpus
    merges, n_tokens = nb["train_bpe"](train, N_MERGES, byte_rank=library_byte_rank())
    return merges, n_tokens, train_library(train, N_MERGES)


def test_notebook_defines_everything(nb):
    assert not nb["__skipped__"], f"definitions that need the running notebook: {nb['__skipped__']}"
    for name in ("pre_tokenize", "train_bpe", "build_vocab", "encode", "decode", "encode_with_special",
                 "bytes_to_unicode", "tokenizers_byte_rank"):
        assert callable(nb[name]), name


def test_byte_table_and_rank_match_the_library(nb):
    assert nb["bytes_to_unicode"]() == gpt2_byte_table()
    assert set(gpt2_byte_table().values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert nb["tokenizers_byte_rank"]() == library_byte_rank()
    vocab = train_library("hello", 0).get_vocab()  # no merges: just the 256-byte alphabet, in the library's order
    assert all(vocab[gpt2_byte_table()[b]] == r for b, r in enumerate(library_byte_rank()))


def test_pre_tokenization_matches_the_library(nb):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rng = random.Random(1)
    for s in ["Hello world! It's 2024,   and\n\n  indented    code.", *(random_text(rng) for _ in range(200))]:
        ours = [chunk.encode("utf-8") for chunk in nb["pre_tokenize"](s)]
        theirs = [as_bytes(piece) for piece, _ in byte_level.pre_tokenize_str(s)]
        assert ours == theirs, repr(s)
        assert "".join(nb["pre_tokenize"](s)) == s


def test_same_merges_as_the_library(nb, trained):
    merges, n_tokens, library = trained
    assert list(merges.values()) == list(range(256, 256 + N_MERGES))
    assert our_merge_bytes(nb, merges) == library_merge_bytes(library)
    assert len(n_tokens) == N_MERGES + 1 and all(b < a for a, b in zip(n_tokens, n_tokens[1:]))


def test_default_tie_rule_differs_only_on_ties(nb, corpus, trained):
    """The documented difference: with byte-value order, the first disagreement is a tie the library breaks
    in its own (GPT-2 character) order; everything before it agrees."""
    train, _ = corpus
    plain, _ = nb["train_bpe"](train, N_MERGES)  # ties go to the smaller byte values
    ours, theirs = our_merge_bytes(nb, plain), library_merge_bytes(trained[2])
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    assert k is not None, "this corpus should contain a tie that the two orders break differently"
    assert ours[:k] == theirs[:k]
    before = dict(list(plain.items())[:k])
    vocab = nb["build_vocab"](before)
    ids = {token: i for i, token in vocab.items()}
    counts = Counter()
    for chunk, freq in Counter(nb["pre_tokenize"](train)).items():
        nb["count_pairs"](nb["encode_chunk"](chunk.encode("utf-8"), before), counts, freq)
    our_pair, their_pair = list(plain)[k], tuple(ids[t] for t in theirs[k])
    assert counts[our_pair] == counts[their_pair] == max(counts.values()), "the disagreement must be a tie"
    rank = library_byte_rank()
    key = lambda pair: tuple(rank[i] if i < 256 else i for i in pair)  # noqa: E731
    assert our_pair < their_pair and key(their_pair) < key(our_pair), "each side picks the first pair in its order"


def test_encode_matches_the_library(nb, corpus, trained):
    _, heldout = corpus
    merges, _, library = trained
    vocab = nb["build_vocab"](merges)
    to_ours = {i: {v: k for k, v in vocab.items()}[as_bytes(t)] for t, i in library.get_vocab().items()}
    rng = random.Random(2)
    for s in [heldout, "naïve café — 東京 🙂👍🏽", *(random_text(rng) for _ in range(200))]:
        ids = nb["encode"](s, merges)
        assert [to_ours[i] for i in library.encode(s).ids] == ids, repr(s[:50])


def test_round_trip_on_random_unicode(nb, trained):
    merges = trained[0]
    vocab = nb["build_vocab"](merges)
    rng = random.Random(3)
    unassigned = "".join(chr(c) for c in (0x0378, 0x3F19D, 0x82A77, 0x10FFFF))  # Cn today; bytes all the same
    for s in ["", "\x00", "\t \r\n", "🙂" * 5, unassigned, *(random_text(rng) for _ in range(500))]:
        assert nb["decode"](nb["encode"](s, merges), vocab) == s, repr(s)


def test_decode_replaces_broken_utf8(nb, trained):
    vocab = nb["build_vocab"](trained[0])
    assert nb["decode"](list("🙂".encode("utf-8"))[:3], vocab) == "\ufffd"
    assert nb["decode"]([0xFF, ord("a")], vocab) == "\ufffda"


def test_special_tokens_match_the_library(nb, corpus, trained):
    _, heldout = corpus
    merges, _, _ = trained
    vocab = nb["build_vocab"](merges)
    eot = len(vocab)
    special = {"<|endoftext|>": eot}
    library = train_library(corpus[0], N_MERGES, special_tokens=["<|endoftext|>"])  # special first: id 0
    to_ours = {i: {v: k for k, v in vocab.items()}[as_bytes(t)] for t, i in library.get_vocab().items()
               if t != "<|endoftext|>"}
    to_ours[library.token_to_id("<|endoftext|>")] = eot
    text = "<|endoftext|>".join([heldout[:300], "naïve 🙂", "", heldout[300:600]]) + "<|endoftext|>"
    ids = nb["encode_with_special"](text, merges, special)
    assert ids.count(eot) == 4 and eot not in nb["encode"](text, merges)
    assert [to_ours[i] for i in library.encode(text).ids] == ids
    assert nb["decode"](ids, {**vocab, eot: b"<|endoftext|>"}) == text
