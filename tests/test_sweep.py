"""tqref.sweep: the spec, the state of each run, and real sweeps on a Dask LocalCluster,
one of them with a worker killed in the middle of a run."""

import json
import os
import signal
import threading
import time

import numba
import numpy as np
import pytest

from tqref.data import load_cifar10, write_synthetic_cifar10
from tqref.sweep import SpecError, expand_spec, load_spec, queue_order, run_state, run_sweep
from tqref.train import TrainConfig, Trainer

TINY = {"model": "small", "batch_size": 64, "lr": 0.05, "train_subset": 256, "test_subset": 64}


def _spec(tmp_path, text):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


GRID = """
out = "runs"
[settings]
model = "small"
[schedules.short]
epochs = 3
milestones = [2]
gammas = [0.1]
[grid]
quant = ["fp", "tex2"]
schedule = ["short"]
seed = [0, 1]
"""


# ---------------------------------------------------------------- the spec
def test_spec_expands_to_named_runs_in_grid_order(tmp_path):
    spec = load_spec(_spec(tmp_path, GRID.replace('out = "runs"', 'out = "runs"\nname = "{quant}-{schedule}-s{seed}"')))
    assert [r.name for r in spec.runs] == ["fp-short-s0", "fp-short-s1", "tex2-short-s0", "tex2-short-s1"]
    assert spec.out == (tmp_path / "runs").resolve()
    tex2 = spec.runs[3]
    assert tex2.folder == spec.out / "tex2-short-s1"
    assert (tex2.settings["ternary"], tex2.settings["t_ex"], tex2.settings["seed"]) == (True, 2, 1)
    assert (tex2.settings["epochs"], tex2.settings["milestones"], tex2.settings["model"]) == (3, [2], "small")
    # every other setting is TrainConfig's default, and the run is exactly the train command shown
    assert tex2.settings["weight_decay"] == TrainConfig().weight_decay
    assert tex2.command().startswith("python -m tqref train --model small --ternary --t-ex 2 --epochs 3 ")


@pytest.mark.parametrize("change, message", [
    ("[grid]\nquant = ['fp']\nseed = [0, 0]", "listed twice"),
    ("[grid]\nquant = ['int8']", "unknown name 'int8'"),
    ("[grid]\ncolour = [1]", "unknown axis 'colour'"),
    ("[grid]\nseed = [0]\n[settings]\nlearning_rate = 0.1", "unknown setting"),
    ("[grid]\nseed = [0, 1]\n[settings]\ndata_dir = 'x'", "belong to the machine"),
    ("name = '{model}'\n[grid]\nseed = [0, 1]", "are not axes"),
    ("name = 'r'\n[grid]\nseed = [0, 1]", "to two runs"),
    ("[grid]\nseed = [0]\nmodel = ['resnet18']", "unknown model 'resnet18'"),
    ("[grid]\nseed = [0]\nepochs = [0]", "epochs: expected a positive integer"),
    ("grids = 1\n[grid]\nseed = [0]", "unknown key"),
    ("", "expected a [grid] table"),
])
def test_bad_spec_is_refused_naming_the_key(tmp_path, change, message):
    import tomllib
    with pytest.raises(SpecError, match=message.replace("[", r"\[")):
        expand_spec(tomllib.loads(change), tmp_path / "s.toml")


def test_missing_and_malformed_spec(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_spec(tmp_path / "absent.toml")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(_spec(tmp_path, "grid = [\n"))


# ---------------------------------------------------------------- state of each run
@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return write_synthetic_cifar10(tmp_path_factory.mktemp("cifar"), images_per_batch=64)


def test_states_new_started_finished_conflict(tmp_path, cifar):
    spec = load_spec(_spec(tmp_path, GRID))
    a, b, c, d = spec.runs
    data = load_cifar10(cifar, verbose=False)
    Trainer(TrainConfig.from_dict({**a.settings}), a.folder, data=data, log=lambda *_: None, progress=False).fit()
    trainer = Trainer(TrainConfig.from_dict({**b.settings}), b.folder, data=data, log=lambda *_: None,
                      progress=False)
    trainer.train_epoch(0)                                          # one epoch of three
    Trainer(TrainConfig.from_dict({**c.settings, "lr": 0.5}), c.folder, data=data, log=lambda *_: None,
            progress=False)                                        # same name, other settings
    states = [run_state(r) for r in spec.runs]
    assert [(s["state"], s["epoch"]) for s in states] == [("finished", 3), ("started", 1), ("conflict", 0),
                                                         ("new", 0)]
    assert "lr: folder 0.5, spec 0.1" in states[2]["detail"]
    with pytest.raises(SpecError, match="holds another run"):
        run_sweep(spec, dry_run=True, log=lambda *_: None)


def test_queue_order_puts_started_runs_first_fewest_epochs_left_first():
    runs = list("abcdef")
    states = [{"state": state, "epoch": epoch, "epochs": 30} for state, epoch in
              [("new", 0), ("started", 21), ("finished", 30), ("started", 27), ("new", 0), ("started", 21)]]
    assert queue_order(runs, states) == ["d", "b", "f", "a", "e"]   # 3 left, 9, 9 (spec order), then new
    states[3]["epochs"] = 40                                          # d: 13 epochs left now
    assert queue_order(runs, states) == ["b", "f", "d", "a", "e"]
    assert queue_order(runs, [{"state": "finished", "epoch": 30, "epochs": 30}] * 6) == []


# ---------------------------------------------------------------- real sweeps on Dask
def _weights(folder):
    with np.load(folder / "last.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k.startswith(("model/", "optim/")) or k == "rng_state"}


@pytest.mark.long
def test_sweep_on_a_local_cluster_runs_then_skips(tmp_path, cifar):
    spec_path = _spec(tmp_path, GRID)
    lines = []
    results = run_sweep(spec_path, workers=2, data_dir=cifar, log=lines.append)
    assert sorted(r["state"] for r in results) == ["trained"] * 4
    spec = load_spec(spec_path)
    assert [run_state(r)["state"] for r in spec.runs] == ["finished"] * 4
    for run in spec.runs:
        config = json.loads((run.folder / "config.json").read_text())
        assert config["t_ex"] == run.settings["t_ex"] and config["seed"] == run.settings["seed"]
        assert (run.folder / "train.log").read_text().count("epoch   3/3") == 1
        assert "MALLOC_TRIM_THRESHOLD_" not in (run.folder / "train.log").read_text()  # not Dask's default
    # the same command again: nothing to do, nothing started
    lines.clear()
    assert run_sweep(spec_path, workers=2, data_dir=cifar, log=lines.append) == []
    assert "nothing to do" in "\n".join(lines)


@pytest.mark.long
def test_a_killed_worker_resumes_the_run_on_another_to_identical_weights(tmp_path, cifar):
    from dask.distributed import Client, LocalCluster

    epochs = 8
    spec_path = _spec(tmp_path, f"""
out = "runs"
name = "{{quant}}-s{{seed}}"
[settings]
model = "small"
batch_size = 32
train_subset = 320
test_subset = 64
epochs = {epochs}
[grid]
quant = ["ternary"]
seed = [3]
""")
    spec = load_spec(spec_path)
    (run,) = spec.runs
    env = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    killed = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env) as cluster, \
            Client(cluster) as client:

        def kill_the_worker_mid_run():
            log = run.folder / "log.jsonl"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # wait for two finished epochs (of eight)
                if log.is_file() and len(log.read_text().splitlines()) >= 2:
                    break
                time.sleep(0.01)
            busy = {addr: keys for addr, keys in client.processing().items() if keys}
            pids = client.run(os.getpid)
            (addr,) = busy
            killed["epochs_done"] = len(log.read_text().splitlines())
            killed["pid"] = pids[addr]
            os.kill(pids[addr], signal.SIGKILL)

        killer = threading.Thread(target=kill_the_worker_mid_run)
        killer.start()
        results = run_sweep(spec_path, scheduler=cluster.scheduler_address, data_dir=cifar, log=lambda *_: None)
        killer.join()
    assert killed and 2 <= killed["epochs_done"] < epochs, killed   # killed in the middle of the run
    assert [r["state"] for r in results] == ["trained"]
    train_log = (run.folder / "train.log").read_text()
    assert "resuming after epoch" in train_log                      # another worker took it over
    assert len((run.folder / "log.jsonl").read_text().splitlines()) == epochs

    # the same run, never interrupted, in this process with the workers' thread count
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        ref = tmp_path / "reference"
        Trainer(TrainConfig.from_dict({**run.settings, "data_dir": str(cifar)}), ref, log=lambda *_: None,
                progress=False).fit()
    finally:
        numba.set_num_threads(threads)
    got, want = _weights(run.folder), _weights(ref)
    assert got.keys() == want.keys() and got
    for key in want:
        assert np.array_equal(got[key], want[key]), key


def test_cli_dry_run_lists_states_and_commands(tmp_path, capsys):
    from tqref.cli import main
    assert main(["sweep", str(_spec(tmp_path, GRID)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 new of 4 runs" in out
    assert out.count("start:   python -m tqref train --model small") == 4
    assert main(["sweep", str(tmp_path / "nope.toml"), "--dry-run"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "spec.toml"), "--workers", "0"]) == 2
    assert "--workers: expected a positive integer, got 0" in capsys.readouterr().err


def test_names_table_keeps_older_folder_names(tmp_path):
    import tomllib
    raw = tomllib.loads(GRID + '\n[names]\n"fp-short-s0" = "older-run"\n')
    spec = expand_spec(raw, tmp_path / "s.toml")
    assert [r.name for r in spec.runs][:2] == ["older-run", "fp-short-s1"]
    raw = tomllib.loads(GRID + '\n[names]\n"fp-short-s9" = "x"\n')
    with pytest.raises(SpecError, match="not names of runs"):
        expand_spec(raw, tmp_path / "s.toml")


def test_publish_readies_finished_and_started_runs_for_a_commit(tmp_path, cifar):
    from tqref import io as tio
    from tqref.sweep import publish, train_run
    spec = load_spec(_spec(tmp_path, GRID.replace('quant = ["fp", "tex2"]', 'quant = ["ternary"]')))
    done, started = spec.runs
    data = load_cifar10(cifar, verbose=False)
    Trainer(TrainConfig.from_dict(done.settings), done.folder, data=data, log=lambda *_: None, progress=False).fit()
    Trainer(TrainConfig.from_dict(started.settings), started.folder, data=data, log=lambda *_: None,
            progress=False).train_epoch(0)
    publish(spec, log=lambda *_: None)
    assert tio.load_checkpoint(done.folder / "last.npz").weights_only
    assert tio.load_checkpoint(done.folder / "best.npz").weights_only
    assert not (done.folder / "final.packed.npz").exists()         # the packed engine runs ResNets only
    assert tio.load_checkpoint(started.folder / "last.npz").weights_only
    assert (started.folder / "last.momentum.npz").is_file()
    assert publish(spec, log=lambda *_: None) == []                 # nothing left to do
    # the split run still resumes (the sweep's own task) and finishes
    assert train_run(started.folder, started.settings, data_dir=str(cifar))["state"] == "trained"
    assert run_state(started)["state"] == "finished"


def test_several_specs_run_as_one_queue_and_out_moves_the_folders(tmp_path, capsys):
    from tqref.cli import main
    from tqref.sweep import merge_specs
    first = _spec(tmp_path, GRID)
    second = tmp_path / "second.toml"
    second.write_text(GRID.replace('quant = ["fp", "tex2"]', 'quant = ["ternary"]'))
    merged = merge_specs([load_spec(first), load_spec(second)])
    assert [r.name for r in merged.runs] == ["fp-short-s0", "fp-short-s1", "tex2-short-s0", "tex2-short-s1",
                                             "ternary-short-s0", "ternary-short-s1"]
    with pytest.raises(SpecError, match="both have a run in"):
        merge_specs([load_spec(first), load_spec(first)])
    elsewhere = tmp_path / "scratch"
    assert main(["sweep", str(first), str(second), "--out", str(elsewhere), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"6 new of 6 runs in {elsewhere}" in out and f"--out {elsewhere}/ternary-short-s1" in out
