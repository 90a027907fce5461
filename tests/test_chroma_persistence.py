"""A persistent Chroma collection outlives the process that wrote it, and `chroma run` serves the same folder.

03.05 (vector databases) teaches both and 03.06 (RAG) builds on them. The writer and the reader are separate
Python processes started here, one after the other, so nothing is shared in memory: whatever the reader finds
came from disk. Each process audits its own network use (`sys.addaudithook`, and strace where the machine has
it, which also sees Chroma's Rust core and the Rust server): Chroma must send no telemetry and must not download
its default embedding model; the writer embeds with the course's MiniLM, which ships in a Python package.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from utils.servers import background_server, free_port, non_loopback_address, port_is_free

COLLECTION = "course-docs"
DOCUMENTS = {
    "d0": ("The assert statement raises AssertionError when its condition is false.", "statements"),
    "d1": ("A lambda expression creates a small anonymous function.", "functions"),
    "d2": ("The pass statement does nothing; it is a placeholder.", "statements"),
    "d3": ("A for loop runs its body once for each item of an iterable.", "loops"),
    "d4": ("The break statement leaves the innermost loop early.", "loops"),
    "d5": ("Cats sleep most of the day on the warmest spot of the house.", "pets"),
    "d6": ("Dogs need a walk at least twice a day.", "pets"),
}
UPDATED = "A def statement defines a named function; a lambda defines an anonymous one inside an expression."
UPSERTED = "The with statement wraps a block of code in the methods of a context manager."
QUESTION = "How do I stop a loop before it has finished?"


def snapshot(collection) -> dict:
    """Everything a collection holds, sorted by id; the vectors as a SHA-256 of their float32 bytes."""
    got = collection.get(include=["documents", "metadatas", "embeddings"])
    order = np.argsort(got["ids"])
    vectors = np.asarray(got["embeddings"], dtype=np.float32)[order]
    return {"ids": [got["ids"][i] for i in order], "documents": [got["documents"][i] for i in order],
            "metadatas": [got["metadatas"][i] for i in order],
            "vectors_sha256": hashlib.sha256(vectors.tobytes()).hexdigest()}


# Every child starts with this: the audit hook first (before chromadb is imported), then the shared helpers.
PROLOGUE = """
import hashlib, json, sys
AUDIT = []  # every outgoing connection or DNS lookup this process attempts
sys.addaudithook(lambda event, args: AUDIT.append(f"{event} {args[1] if event == 'socket.connect' else args[0]}")
                 if event in ("socket.connect", "socket.getaddrinfo") else None)
import chromadb
import numpy as np
from chromadb.config import Settings
""" + textwrap.dedent(inspect.getsource(snapshot))

WRITER = PROLOGUE + f"""
from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction
from sentence_transformers import SentenceTransformer
from utils.hub import model_path

path = sys.argv[1]
minilm = model_path("embedding", preset="smoke")  # the real all-MiniLM-L6-v2, from its Python package
embed = SentenceTransformerEmbeddingFunction(model_name=minilm, normalize_embeddings=True)
client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
collection = client.create_collection({COLLECTION!r}, embedding_function=embed,
                                      configuration={{"hnsw": {{"space": "cosine"}}}})
documents = {DOCUMENTS!r}
collection.add(ids=list(documents), documents=[text for text, _ in documents.values()],
               metadatas=[{{"topic": topic, "n": i}} for i, (_, topic) in enumerate(documents.values())])
collection.update(ids=["d1"], documents=[{UPDATED!r}], metadatas=[{{"topic": "functions", "n": 1, "edited": True}}])
collection.upsert(ids=["d7"], documents=[{UPSERTED!r}], metadatas=[{{"topic": "statements", "n": 7}}])
collection.delete(ids=["d2"])
collection.delete(where={{"topic": "pets"}})
question = embed([{QUESTION!r}])[0].tolist()
stored_d1 = collection.get(ids=["d1"], include=["embeddings"])["embeddings"][0]
direct_d1 = SentenceTransformer(minilm).encode([{UPDATED!r}], normalize_embeddings=True)[0]
result = snapshot(collection)
result.update(question=question, top=collection.query(query_texts=[{QUESTION!r}], n_results=3)["ids"][0],
              d1_is_minilm=bool(np.allclose(stored_d1, direct_d1, atol=1e-5)), audit=AUDIT)
print(json.dumps(result))
"""

READER = PROLOGUE + f"""
path, question = sys.argv[1], json.loads(sys.argv[2])
client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
collection = client.get_collection({COLLECTION!r}, embedding_function=None)  # stored vectors only
result = snapshot(collection)
result.update(top=collection.query(query_embeddings=[question], n_results=3)["ids"][0],
              embedding_function=collection.configuration_json["embedding_function"], audit=AUDIT)
print(json.dumps(result))
"""


LOCAL = ("127.0.0.1", "localhost", "::1", "/")  # loopback names and addresses; "/" starts a Unix socket path


def off_machine(audit: list[str]) -> list[str]:
    """The audited connections and lookups (Python's `socket` module) that were not for this machine."""
    return [entry for entry in audit if not any(name in entry.split(" ", 1)[1] for name in LOCAL)]


def strace_prefix(log: Path) -> list[str]:
    """`strace` logging every connect() of every thread to `log`, or [] where strace is missing or not allowed.

    The audit hook sees only Python's sockets; Chroma's core is Rust, and the server is a Rust process. strace
    sees the system calls of both.
    """
    prefix = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect"]  # seccomp: stop only at connect()
    if not shutil.which("strace") or subprocess.run([*prefix, "-o", os.devnull, "true"]).returncode != 0:
        return []
    return [*prefix, "-o", str(log)]


def connections_off_machine(log: Path) -> list[str]:
    """The internet connect() calls in a strace log (Unix sockets and loopback left out)."""
    if not log.is_file():
        return []
    lines = [line for line in log.read_text().splitlines() if "AF_INET" in line]
    return [line for line in lines if not any(f'"{a}"' in line for a in ("127.0.0.1", "::1", "::ffff:127.0.0.1"))]


def run_child(script: str, *args: str, log: Path) -> dict:
    """Run `script` in a fresh Python (under strace if possible); return the JSON of its last line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    child = subprocess.run([*strace_prefix(log), sys.executable, "-c", script, *args], capture_output=True,
                           text=True, timeout=300, env=env)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    """(folder, the writer's snapshot): a collection written by a process that has exited."""
    tmp = tmp_path_factory.mktemp("chroma")
    wrote = run_child(WRITER, str(tmp / "db"), log=tmp / "writer.strace")
    wrote["connections"] = connections_off_machine(tmp / "writer.strace")
    return tmp / "db", wrote


def test_the_writer_embedded_with_minilm_and_reached_no_network(written):
    _, wrote = written
    assert wrote["d1_is_minilm"], "updated text must be re-embedded by the course's MiniLM"
    assert len(wrote["question"]) == 384
    assert wrote["top"][0] == "d4", "MiniLM should rank the sentence about `break` first"
    assert off_machine(wrote["audit"]) == [], "Chroma or the model tried to reach the network (Python)"
    assert wrote["connections"] == [], "Chroma or the model tried to reach the network (strace)"


def test_a_fresh_process_finds_everything_the_writer_left(written, tmp_path):
    folder, wrote = written
    read = run_child(READER, str(folder), json.dumps(wrote["question"]), log=tmp_path / "reader.strace")
    for key in ("ids", "documents", "metadatas", "vectors_sha256", "top"):
        assert read[key] == wrote[key], f"{key} differs after the writer exited"
    assert read["ids"] == ["d0", "d1", "d3", "d4", "d7"], "deletes by id and by filter, and the upsert, persist"
    assert read["documents"][1] == UPDATED and read["metadatas"][1]["edited"] is True, "the update persists"
    ef = read["embedding_function"]
    assert ef["name"] == "sentence_transformer" and ef["config"]["normalize_embeddings"] is True
    assert Path(ef["config"]["model_name"]).is_dir(), "the collection remembers the local MiniLM, not a download"
    assert off_machine(read["audit"]) == [] and connections_off_machine(tmp_path / "reader.strace") == []


def chroma_cli() -> str:
    beside_python = Path(sys.executable).with_name("chroma")
    return str(beside_python) if beside_python.exists() else shutil.which("chroma")


def test_chroma_run_serves_the_same_collection_on_loopback_only(written, tmp_path):
    import chromadb
    from chromadb.config import Settings

    folder, wrote = written
    port = free_port()
    argv = [*strace_prefix(tmp_path / "server.strace"), chroma_cli(), "run", "--path", str(folder),
            "--host", "127.0.0.1", "--port", str(port)]
    with background_server(argv, port, health_path="/api/v2/heartbeat", timeout=180) as server:
        client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))
        collection = client.get_collection(COLLECTION, embedding_function=None)
        served = snapshot(collection)
        top = collection.query(query_embeddings=[wrote["question"]], n_results=3)["ids"][0]
        outside = non_loopback_address()
        if outside is not None:
            with pytest.raises(OSError), socket.create_connection((outside, port), timeout=2):
                pass
    assert {key: wrote[key] for key in served} == served and top == wrote["top"]
    assert server.poll() is not None and port_is_free(port), "the server is stopped and its port released"
    assert connections_off_machine(tmp_path / "server.strace") == [], "the server tried to reach the network"
