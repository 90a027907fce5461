"""The grader (utils/grading.py): good, wrong, tampered, crashing, looping and malicious submissions.

A tiny course of one notebook with two exercises is written into a temporary folder, released with the real
student release, and "students" submit copies of it. Everything the malicious submission attacks (the
grader's output folder, another student's submission, the course itself, a server of this test on
127.0.0.1) is readable by every user and deletable by root, so only the sandbox stands between the attack and
its target; the same submission graded without the sandbox does delete them, which shows that the attack is
real.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path

import nbformat
import pytest

from utils import grading, sandbox
from utils.notebooks import repository_url
from utils.grading_report import gradebook_rows
from utils import notebooks as nbs
from utils.student import student_notebook

pytestmark = pytest.mark.slow
NAME = "90_grading_fixture.ipynb"
GOOD = ["def double(x):\n    # Hint: multiply by two.\n    return 2 * x", "# Hint: 6 times 7.\nanswer = 42"]
CHECKS = ["check_function(double, lambda x: 2 * x, lambda rng: (rng.normal(size=3),))",
          "check_equal(answer, 42, name='answer')"]
needs_sandbox = pytest.mark.skipif(bool(sandbox.available()), reason=sandbox.available() or "")


def course_notebook() -> nbformat.NotebookNode:
    """Title, setup, then two exercises, each a `solution` cell followed by its self-check."""
    v4 = nbformat.v4
    cells = [v4.new_markdown_cell("# 00.90 · Grading fixture"),
             v4.new_code_cell("from utils.checks import check_equal, check_function", metadata={"tags": ["setup"]})]
    for solution, check in zip(GOOD, CHECKS):
        cells += [v4.new_code_cell(solution, metadata={"tags": ["solution"]}), v4.new_code_cell(check)]
    return v4.new_notebook(cells=cells)


def submission(answers: list[str] | None, checks: list[str] | None = None) -> nbformat.NotebookNode:
    """The student release of the course notebook, with `answers` (None: none) written into its exercises."""
    nb, _ = student_notebook(course_notebook(), f"00_prerequisites/{NAME}", repository_url())
    for k, index in enumerate(grading.answer_cells(nb) if answers else []):
        nb.cells[index].source = answers[k]
        if checks is not None:  # a student who rewrote the self-check too
            nb.cells[index + 1].source = checks[k]
    return nb


@pytest.fixture(scope="module")
def public() -> Path:
    """A folder under /tmp that every user may read (0755), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="grading-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    """A TCP server of this test on 127.0.0.1 that counts the connections it accepts."""
    sock = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(sock.accept()), daemon=True).start()
    yield sock.getsockname()[1], accepted
    sock.close()


def attack(public: Path, port: int) -> str:
    """An answer that tries to delete the grader's output, another submission and the course, to reach the
    network and a server on the grader's 127.0.0.1, and leaves a process and files behind; then answers."""
    targets = [public / "out", public / "submissions" / "zed", public / "course"]
    return f"""import os, shutil, socket, subprocess
# Hint: multiply by two.
for target in {[str(t) for t in targets]!r}:
    try:
        shutil.rmtree(target)
        print("DELETED", target)
    except OSError as error:
        print("kept", target, type(error).__name__)
for address in [("127.0.0.1", {port}), ("1.1.1.1", 53)]:
    try:
        socket.create_connection(address, timeout=3)
        print("CONNECTED", address)
    except OSError as error:
        print("no connection to", address, error)
print("left behind", subprocess.Popen(["sleep", "300"], start_new_session=True).pid)
for folder in ("/tmp", "/dev/shm"):
    with open(f"{{folder}}/mallory-{port}", "w") as leftover:
        leftover.write("left behind")
print(next(line for line in open("/proc/self/status") if line.startswith("NoNewPrivs")))

def double(x):
    return 2 * x"""


def write_tree(public: Path, port: int) -> None:
    """The course, and one submission per kind of student (graded in this alphabetical order)."""
    nbs.save_notebook(course_notebook(), public / "course" / "00_prerequisites" / NAME)
    students = {
        "alice_good": submission(GOOD),
        "bob_wrong": submission(["def double(x):\n    return 3 * x", GOOD[1]]),
        "carol_tampered": submission(["def double(x):\n    return 3 * x", "answer = 41"], ["pass", "pass"]),
        "dan_stub": submission(None),  # the release as it was handed out
        "erin_crash": submission([GOOD[0], "import os\nos._exit(3)"]),
        "frank_loop": submission([GOOD[0], "while True:\n    pass"]),
        "hank_flood": submission([GOOD[0], "for _ in range(20_000):\n    print('x' * 500)\nanswer = 42"]),
        "gina_memory": submission(["hoard = bytearray(6 * 2**30)\n" + GOOD[0], GOOD[1]]),  # over the 4 GiB limit
        "mallory_attack": submission([attack(public, port), GOOD[1]]),
        "zed": submission(GOOD),  # the victim: graded after the attack
    }
    for student, nb in students.items():
        nbs.save_notebook(nb, public / "submissions" / student / NAME)
    (public / "submissions" / "zed" / "notes.txt").write_text("my own file\n")
    (public / "out").mkdir()
    (public / "out" / "earlier-grades.csv").write_text("kept\n")


@pytest.fixture(scope="module")
def graded(public: Path, server) -> dict[str, grading.Graded]:
    if sandbox.available():
        pytest.skip(sandbox.available())
    write_tree(public, server[0])
    results = grading.grade(public / "course", public / "submissions", public / "out", time_limit=25,
                            memory_gib=4)
    return {r.student: r for r in results}


def executed_text(public: Path, student: str) -> str:
    """Everything the executed copy of a student's notebook printed."""
    nb = nbs.read_notebook(public / "out" / "executed" / student / NAME)
    return "".join(o.get("text", "") + o.get("ename", "") + o.get("evalue", "") for c in nb.cells
                   for o in c.get("outputs", []))


@needs_sandbox
def test_good_wrong_and_stub_submissions_score_what_their_checks_say(graded):
    assert graded["alice_good"].exercises == ["passed", "passed"]
    assert graded["alice_good"].ended == "ran to the end"
    assert graded["bob_wrong"].exercises == ["failed", "passed"]
    assert graded["dan_stub"].exercises == ["failed", "failed"]


@needs_sandbox
def test_the_course_checks_are_run_not_the_students_copy(graded):
    assert graded["carol_tampered"].exercises == ["failed", "failed"]


@needs_sandbox
def test_a_crashing_kernel_scores_what_it_reached(graded):
    assert graded["erin_crash"].ended == "kernel died"
    assert graded["erin_crash"].exercises == ["passed", "not reached"]


@needs_sandbox
def test_an_endless_loop_is_stopped_at_the_time_limit(graded):
    assert graded["frank_loop"].ended == "timed out"
    assert graded["frank_loop"].exercises == ["passed", "not reached"]
    # the 25 s limit (each cell's timeout is what is left of it in whole seconds, rounded down: up to 1 s less),
    # plus starting the kernel on a busy machine
    assert 24 <= graded["frank_loop"].seconds < 200


@needs_sandbox
def test_memory_is_limited_and_the_kernel_survives_running_out(graded, public):
    assert "MemoryError" in executed_text(public, "gina_memory")
    assert graded["gina_memory"].exercises == ["failed", "passed"]
    assert graded["gina_memory"].ended == "ran to the end"


@needs_sandbox
def test_a_flood_of_output_is_cut_and_still_graded(graded, public):
    executed = public / "out" / "executed" / "hank_flood" / NAME
    assert executed.stat().st_size < 3_000_000  # it printed 10 MB
    assert grading.OUTPUT_CUT in executed_text(public, "hank_flood")
    assert graded["hank_flood"].exercises == ["passed", "passed"]


@needs_sandbox
def test_an_attack_deletes_nothing_reaches_nothing_and_leaves_nothing(graded, public, server):
    text = executed_text(public, "mallory_attack")
    assert "DELETED" not in text and text.count("kept ") == 3 and "PermissionError" in text
    assert "CONNECTED" not in text and "Connection refused" in text and "Network is unreachable" in text
    assert not server[1], "the sandboxed kernel reached the grader's 127.0.0.1"
    pid = int(text.split("left behind ")[1].split()[0])
    assert not Path(f"/proc/{pid}").exists() or "sleep" not in Path(f"/proc/{pid}/cmdline").read_text()
    assert not Path(f"/tmp/mallory-{server[0]}").exists() and not Path(f"/dev/shm/mallory-{server[0]}").exists()
    assert "NoNewPrivs:\t1" in text  # no setuid program can give a privilege back
    assert (public / "course" / "00_prerequisites" / NAME).is_file()
    assert (public / "out" / "earlier-grades.csv").read_text() == "kept\n"
    assert (public / "submissions" / "zed" / "notes.txt").is_file()
    assert graded["zed"].exercises == ["passed", "passed"]
    assert graded["mallory_attack"].exercises == ["passed", "passed"]  # the attack failed; the answer is right


@needs_sandbox
def test_the_gradebook_has_a_row_per_exercise_a_summary_and_a_plot(graded, public):
    rows = list(csv.DictReader((public / "out" / "gradebook.csv").open()))
    assert len(rows) == 2 * len(graded)
    assert {r["status"] for r in rows} == {"passed", "failed", "not reached"}
    assert sum(int(r["passed"]) for r in rows) == sum(g.score for g in graded.values())
    summary = (public / "out" / "summary.md").read_text()
    assert f"| 00_prerequisites/{NAME} | 2 | 6 | 10 | 60% |" in summary
    assert (public / "out" / "summary.png").stat().st_size > 1000


@needs_sandbox
def test_without_the_sandbox_the_same_attack_does_delete():
    """The control: the attack is real, and only the sandbox stops it."""
    victims = Path(tempfile.mkdtemp(prefix="grading-control-"))
    try:
        write_tree(victims, 9)  # port 9 (discard): nothing listens, this test's server stays untouched
        mallory = victims / "only" / "mallory_attack"
        mallory.mkdir(parents=True)
        shutil.copy(victims / "submissions" / "mallory_attack" / NAME, mallory / NAME)
        grading.grade(victims / "course", victims / "only", victims / "report", use_sandbox=False, time_limit=60)
        assert not (victims / "submissions" / "zed").exists()
        assert not (victims / "out").exists()
    finally:  # unsandboxed, nobody cleans up after the attack but this test
        executed = victims / "report" / "executed" / "mallory_attack" / NAME
        printed = "".join(o.get("text", "") for o in nbs.read_notebook(executed).cells[2].outputs
                          ) if executed.is_file() else ""
        if "left behind " in printed:
            os.kill(int(printed.split("left behind ")[1].split()[0]), signal.SIGKILL)
        for leftover in ("/tmp/mallory-9", "/dev/shm/mallory-9"):
            Path(leftover).unlink(missing_ok=True)
        shutil.rmtree(victims, ignore_errors=True)


def test_answers_that_redefine_a_check_are_flagged():
    nb, answers, flags = grading.graded_notebook(course_notebook(), submission(
        ["import utils.checks\nutils.checks.check_function = print\ndef double(x):\n    return x",
         "from utils.checks import check_equal\nfrom fake import check_close as check_equal\nanswer = 42"]))
    assert answers == 2
    assert flags == ["exercise 1 redefines check_function", "exercise 2 redefines check_equal"]


def test_a_submission_without_answers_is_missing_every_exercise():
    nb, answers, _ = grading.graded_notebook(course_notebook(), nbformat.v4.new_notebook())
    assert answers == 0
    assert "no answer in the submission" in nb.cells[2].source
    assert grading.exercise_statuses(nb, answers, -1, "ran to the end") == ["missing", "missing"]


def test_a_notebook_that_is_not_in_the_course_gets_one_row_and_no_kernel(tmp_path):
    graded, executed = grading.grade_one("eve", tmp_path / "my_notes.ipynb", {}, tmp_path, None, {})
    assert executed is None and graded.ended == "unknown notebook"
    rows = gradebook_rows([graded])
    assert [(r["exercise"], r["status"], r["passed"]) for r in rows] == [(0, "missing", 0)]


def test_grading_refuses_to_run_untrusted_code_unsandboxed(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    (tmp_path / "subs").mkdir()
    with pytest.raises(ValueError, match="needs root.*--no-sandbox"):
        grading.grade(tmp_path, tmp_path / "subs", tmp_path / "out")
