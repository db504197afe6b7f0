"""results/queue.sh, the script that starts and resumes the background runs
of results/, with a stand-in ``python`` that only records its arguments: the
order of the runs, --resume once a run has started (its config.json exists), skipping a finished run
(result.json), waiting for the run a fine-tune starts from, the packed
export of finished ternary runs and the weights-only checkpoints of all finished runs;
and its ``split`` mode, which readies the runs still training for a commit."""

import os
import pathlib
import shutil
import subprocess
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
QUEUE = REPO_ROOT / "results" / "queue.sh"

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")


def _queue(tmp_path, slot, finished=(), started=(), first_epoch=()):
    """Start the queue of ``slot`` with a stand-in python; returns (process, results folder, calls file).
    Run folders: ``finished`` and ``started`` ones hold a config.json and a last.npz, the
    ``first_epoch`` ones (stopped before their first checkpoint) only the config.json."""
    results = tmp_path / "results"
    for name in finished + started + first_epoch:
        (results / name).mkdir(parents=True, exist_ok=True)
        (results / name / "config.json").write_text("{}")
    for name in finished + started:
        (results / name / "last.npz").write_bytes(b"")
    for name in finished:
        (results / name / "result.json").write_text("{}")
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    calls = tmp_path / "calls.txt"
    (fake / "python").write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n')
    (fake / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", RESULTS=str(results),
               QUEUE_POLL_SECONDS="0.1")
    proc = subprocess.Popen(["sh", str(QUEUE), slot], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, results, calls


def _calls(results, calls):
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [line.replace(str(results) + "/", "") for line in lines]


def _run_queue(tmp_path, slot, finished=(), started=(), first_epoch=()):
    proc, results, calls = _queue(tmp_path, slot, finished, started, first_epoch)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), _calls(results, calls)


def test_slot_a_resumes_skips_and_continues_in_order(tmp_path):
    proc, calls = _run_queue(tmp_path, "A", finished=("resnet20-fp",), started=("resnet32-fp",),
                             first_epoch=("resnet56-fp",))
    assert proc.returncode == 0, proc.stderr
    assert "resnet20-fp: finished" in proc.stdout
    trains = [c for c in calls if c.startswith("-m tqref train")]
    assert [c.split("--out ")[1].split()[0] for c in trains] == [
        "resnet20-tex2", "resnet32-fp", "resnet44-fp", "resnet56-fp"]
    tex2 = trains[0]
    assert "--ternary --t-ex 2 --init-from" in tex2 and "resnet20-fp/last.npz" in tex2
    assert "--lr 0.01 --epochs 40 --milestones 20 30 --gammas 0.1 0.1" in tex2
    assert trains[1].endswith("--resume")            # resnet32-fp has a last.npz
    assert not trains[2].endswith("--resume")        # resnet44-fp has no folder yet
    assert trains[3].endswith("--resume")            # resnet56-fp stopped in its first epoch
    assert "--lr 0.01 --epochs 30 --milestones 1 12 18 24 --gammas 10 0.1 0.1 0.5" in trains[3]
    # the t_ex = 2 run is ternary: exported once trained
    assert calls[calls.index(tex2) + 1] == ("-m tqref export resnet20-tex2/last.npz "
                                            "resnet20-tex2/final.packed.npz --format packed")
    # every finished run, trained now or before, is published weights only
    for name in ("resnet20-fp", "resnet20-tex2", "resnet32-fp"):
        for checkpoint in ("last", "best"):
            assert f"-m tqref export {name}/{checkpoint}.npz {name}/{checkpoint}.npz --format weights" in calls
    assert calls[0] == "-m tqref export resnet20-fp/last.npz resnet20-fp/last.npz --format weights"


def test_slot_b_exports_a_finished_ternary_run_that_lacks_its_packed_file(tmp_path):
    proc, calls = _run_queue(tmp_path, "B", finished=("resnet20-ternary", "resnet20-fp"))
    assert proc.returncode == 0, proc.stderr
    assert calls[:3] == ["-m tqref export resnet20-ternary/last.npz "
                         "resnet20-ternary/final.packed.npz --format packed",
                         "-m tqref export resnet20-ternary/last.npz resnet20-ternary/last.npz --format weights",
                         "-m tqref export resnet20-ternary/best.npz resnet20-ternary/best.npz --format weights"]
    trains = [c for c in calls if "train" in c]
    assert [c.split("--out ")[1].split()[0] for c in trains] == [
        "resnet20-ternary-ft", "resnet32-ternary", "resnet44-ternary", "resnet56-ternary"]
    # the t_ex = 1 fine-tune: the t_ex = 2 run's start and schedule (slot A's test checks those)
    assert "--model resnet20 --ternary --init-from resnet20-fp/last.npz --lr 0.01 --epochs 40 " \
           "--milestones 20 30 --gammas 0.1 0.1 --seed 0" in trains[0]


def test_slot_b_fine_tunes_only_after_slot_a_has_finished_the_full_precision_run(tmp_path):
    proc, results, calls = _queue(tmp_path, "B", finished=("resnet20-ternary",), started=("resnet20-fp",))
    try:
        assert proc.stdout.readline().strip() == "resnet20-ternary: finished"
        assert proc.stdout.readline().strip() == "waiting for resnet20-fp to finish"
        time.sleep(0.5)  # a few polls: still nothing trained
        assert proc.poll() is None
        assert not any("train" in c for c in _calls(results, calls))
        (results / "resnet20-fp" / "result.json").write_text("{}")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    trains = [c for c in _calls(results, calls) if "train" in c]
    assert trains[0].split("--out ")[1].split()[0] == "resnet20-ternary-ft" and len(trains) == 4


def test_split_readies_only_the_runs_still_training_for_a_commit(tmp_path):
    results = tmp_path / "results"
    (results / "resnet56-ternary").mkdir(parents=True)
    (results / "resnet56-ternary" / "best.npz").write_bytes(b"")
    proc, calls = _run_queue(tmp_path, "split", finished=("resnet44-fp",),
                             started=("resnet56-fp", "resnet56-ternary"), first_epoch=("resnet32-fp",))
    assert proc.returncode == 0, proc.stderr
    assert calls == ["-m tqref export resnet56-fp/last.npz resnet56-fp/last.npz --format split",
                     "-m tqref export resnet56-ternary/last.npz resnet56-ternary/last.npz --format split",
                     "-m tqref export resnet56-ternary/best.npz resnet56-ternary/best.npz --format weights"]


def test_unknown_slot_is_refused(tmp_path):
    proc, calls = _run_queue(tmp_path, "C")
    assert proc.returncode == 2 and "usage" in proc.stderr and calls == []
