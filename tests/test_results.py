"""The committed training runs in results/: every folder results/NAME/ that
holds a last.npz is checked to be what its files say it is.

    (a) config.json, log.jsonl and the checkpoints agree: same settings, the
        checkpoint's epoch is a logged epoch, its accuracies (and for ternary
        runs the share of zero codes) are the ones logged for that epoch;
        a finished run's result.json holds the log's numbers, and its
        last.npz / best.npz hold the final / best logged epoch, weights
        only (without momentum buffers, every file under 5 MB); a run still
        training can be resumed (its momentum buffers in last.npz or in
        last.momentum.npz beside it);
    (b) each checkpoint (last.npz, best.npz) evaluated on the CIFAR-10 test
        set (tqref.train.evaluate, as ``python -m tqref evaluate`` does)
        gives the top-1 logged for its epoch — exactly
        on this machine; elsewhere (other BLAS kernels, or kernels changed
        since the epoch was logged) only images whose two highest logits are
        near-ties (< 2e-4 apart) may flip;
    (c) the PyTorch export (``export --format torch``) of one run per
        exported architecture (model, quantizer settings: the run named first
        among those that share them), loaded into a plain PyTorch CIFAR ResNet
        (tests/torch_reference.py), gives the same logits and top-1 as tqref
        (skipped without torch).  Once per architecture, not per seed: the
        export is the same code for every seed, and (b) already checks every
        checkpoint's top-1;
    (d) every packed export (``*.packed.npz``) is the export of the checkpoint
        its metadata names (that file's epoch, the same codes, α and folded
        BN, layer by layer); and, once per exported architecture as in (c),
        the packed file evaluated by the add-only engine gives the top-1
        logged for its epoch (skipped when a run has no packed file);
    (e) results/README.md and the top-level README.md show what ``python -m
        tqref compare`` prints for the runs at the epochs they say the runs
        had reached (results/refresh.py writes those parts of the READMEs).

The runs may still be training: the trainer replaces last.npz (atomically)
after every epoch.  So last.npz is copied once, and everything is compared
with the epoch stored inside that copy, never with "the last line of the log".
The log is read after the copy: the trainer appends an epoch's log line before
it writes that epoch's checkpoint, so the copy's epoch is always in the log.

(b)-(d) need the CIFAR-10 test set, found as tqref finds it without
--data-dir ($TQREF_DATA, then the cache); they are skipped when it is not
found.  Time on the 2-core development machine with the two ResNet-20
training runs sharing the cores: per ResNet-20 checkpoint about 13 s for (b)
and 20 s for (c) (10,000 test images, batch 256 in tqref, 500 in PyTorch);
a ResNet-56 checkpoint takes about 3x as long, and its packed file in the
add-only engine about 60 s.  (b) grows with every committed run (each seed
of the sweeps adds two checkpoints); (c) and the engine's top-1 in (d) grow
only with new architectures.
"""

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from torch_reference import torch_cifar_resnet  # tests/torch_reference.py

from tqref import io as tio
from tqref.data import FOLDER, TEST_FILE, DataError, find_cifar10, load_batch, normalize
from tqref.nn import no_grad
from tqref.train import TrainConfig, evaluate, read_log, ternary_stats

RESULTS = Path(__file__).resolve().parent.parent / "results"
RUNS = sorted(path.parent for path in RESULTS.glob("*/last.npz"))

# settings a resumed run may change (``Trainer._prepare_resume``), and what
# config.json records beyond the TrainConfig
MAY_CHANGE_ON_RESUME = ("epochs", "data_dir")
NOT_SETTINGS = TrainConfig.RECORDED_BESIDE


# what the export to PyTorch depends on: the settings tqref.io.model_from_config
# builds a run's model from (the architecture and the quantizer), all but the seed
EXPORT_SETTINGS = ("model", "ternary", "t_ex", "keep_first", "keep_last", "variant",
                   "threshold_rule", "delta_factors")


def _one_run_per_export(runs):
    """The first run (by name) of each distinct EXPORT_SETTINGS in ``runs``."""
    chosen = {}
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        key = json.dumps([config.get(name) for name in EXPORT_SETTINGS])
        chosen.setdefault(key, run)
    return sorted(chosen.values())


EXPORT_RUNS = _one_run_per_export(RUNS)
PACKED_RUNS = _one_run_per_export([run for run in RUNS if any(run.glob("*.packed.npz"))])


@pytest.fixture(scope="module", params=RUNS, ids=[run.name for run in RUNS])
def run_dir(request):
    return request.param


def _snapshot(run_dir, name, folder):
    """Copy ``run_dir/name`` once (a single read: the trainer's atomic rename
    never changes a file already opened), then read the copy and the log."""
    copy = folder / name
    shutil.copyfile(run_dir / name, copy)
    model, ckpt = tio.load_model(copy)
    records = read_log(run_dir)  # after the copy, so the copy's epoch is logged
    return SimpleNamespace(path=copy, model=model, ckpt=ckpt, records=records,
                           logged={r["epoch"]: r for r in records})


@pytest.fixture(scope="module", params=["last.npz", "best.npz"])
def checkpoint(run_dir, request, tmp_path_factory):
    """A committed checkpoint of the run (last.npz, best.npz), read once:
    .path (the copy), .model (eval mode), .ckpt (tqref.io.Checkpoint),
    .records / .logged (the log, a list / by epoch)."""
    name = request.param
    if not (run_dir / name).is_file():
        pytest.skip(f"{run_dir.name} has no {name} yet")
    return _snapshot(run_dir, name, tmp_path_factory.mktemp(f"{run_dir.name}-{name}"))


@pytest.fixture(scope="module")
def cifar10_test():
    """The CIFAR-10 test images (uint8, (10000, 3, 32, 32)) and labels."""
    try:
        root = find_cifar10()
    except DataError as err:
        pytest.skip(f"needs the CIFAR-10 test set: {err}")
    return load_batch(root / FOLDER / TEST_FILE)


def _test_images(cifar10_test, config):
    """The test images the run evaluated after each epoch (its test_subset, if any)."""
    images, labels = cifar10_test
    n = config.get("test_subset") or len(images)
    return images[:n], labels[:n]


# ---------------------------------------------------------------- (a) the files agree
def test_config_log_and_checkpoint_agree(run_dir, checkpoint):
    snap, ckpt, name = checkpoint, checkpoint.ckpt, checkpoint.path.name

    config = json.loads((run_dir / "config.json").read_text())
    settings = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
    assert set(settings) == set(ckpt.config), "config.json and the checkpoint hold other settings"
    differ = {k: (settings[k], ckpt.config[k]) for k in settings
              if k not in MAY_CHANGE_ON_RESUME and settings[k] != ckpt.config[k]}
    assert not differ, f"config.json and {name} disagree (config.json, checkpoint): {differ}"
    TrainConfig.from_dict(ckpt.config).validate()

    epochs = [r["epoch"] for r in snap.records]
    assert epochs == list(range(1, len(epochs) + 1)), f"log.jsonl epochs are not 1, 2, ...: {epochs}"
    assert ckpt.epoch in snap.logged, f"{name} holds epoch {ckpt.epoch}, the log ends at {epochs[-1:]}"
    record = snap.logged[ckpt.epoch]
    assert (ckpt.metrics["top1"], ckpt.metrics["top5"]) == (record["test_top1"], record["test_top5"])
    # the best so far: the first epoch up to the checkpoint's with the highest top-1
    so_far = [r for r in snap.records if r["epoch"] <= ckpt.epoch]
    best = max(so_far, key=lambda r: r["test_top1"])
    assert (ckpt.metrics["best_top1"], ckpt.metrics["best_epoch"]) == (best["test_top1"], best["epoch"])
    if name == "best.npz":
        assert ckpt.epoch == best["epoch"]

    if ckpt.config.get("ternary"):
        sparsity, layers = ternary_stats(snap.model)
        assert sparsity == record["sparsity"], "the checkpoint's zero codes are not the logged ones"
        assert layers == record["layers"]


def test_a_finished_runs_result_json_is_its_log(run_dir):
    """result.json (written once, after the last epoch) against the log: the
    numbers the READMEs and the closing notes quote come from one place."""
    if not (run_dir / "result.json").is_file():
        pytest.skip(f"{run_dir.name} has not finished")
    result = json.loads((run_dir / "result.json").read_text())
    records = read_log(run_dir)
    final = records[-1]
    best = max(records, key=lambda r: r["test_top1"])  # the first epoch with the highest top-1
    assert result["epochs"] == final["epoch"], "result.json is older than the log's last epoch"
    assert (result["final_top1"], result["final_top5"]) == (final["test_top1"], final["test_top5"])
    assert (result["best_epoch"], result["best_top1"], result["best_top5"]) == (
        best["epoch"], best["test_top1"], best["test_top5"])
    assert result["wall_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in records))
    assert result["images_per_s"] == pytest.approx(np.mean([r["images_per_s"] for r in records]))
    assert result.get("final_sparsity") == final.get("sparsity")
    # the committed checkpoints of a finished run are its final and its best epoch
    for name, epoch in (("last.npz", final["epoch"]), ("best.npz", best["epoch"])):
        if (run_dir / name).is_file():
            assert tio.load_checkpoint(run_dir / name).epoch == epoch, f"{name} is not epoch {epoch}"


def test_a_finished_run_is_published_weights_only(run_dir):
    """`sweep --publish` rewrites a finished run's checkpoints without their momentum
    buffers (export --format weights), so that every one stays under the
    repository's 5 MB limit for a file."""
    if not (run_dir / "result.json").is_file():
        pytest.skip(f"{run_dir.name} is still training")
    for name in ("last.npz", "best.npz"):
        assert tio.load_checkpoint(run_dir / name).weights_only, f"{run_dir.name}/{name} holds momentum buffers"
    too_big = {p.name: p.stat().st_size for p in run_dir.iterdir() if p.stat().st_size > 5_000_000}
    assert not too_big, f"{run_dir.name}: files over 5 MB: {too_big}"


def test_a_run_still_training_can_be_resumed(run_dir):
    """A run committed mid-training keeps what --resume needs: a last.npz
    with its momentum buffers, or (as results/README says the sessions commit
    it) last.npz weights only with the fitting last.momentum.npz beside it
    (export --format split), every file under the same 5 MB limit."""
    if (run_dir / "result.json").is_file():
        pytest.skip(f"{run_dir.name} has finished")
    last = tio.load_checkpoint(run_dir / "last.npz")
    if last.weights_only:
        assert tio.load_momentum(last), f"{run_dir.name}/last.momentum.npz holds no buffers"
    too_big = {p.name: p.stat().st_size for p in run_dir.iterdir() if p.stat().st_size > 5_000_000}
    assert not too_big, f"{run_dir.name}: files over 5 MB: {too_big}"


# ---------------------------------------------------------------- (b) it evaluates to the log
@pytest.mark.long
def test_checkpoint_reproduces_its_logged_top1(checkpoint, cifar10_test):
    images, labels = _test_images(cifar10_test, checkpoint.ckpt.config)
    batch = checkpoint.ckpt.config.get("eval_batch_size", 256)  # as the run evaluated it
    got = evaluate(checkpoint.model, images, labels, batch)
    record = checkpoint.logged[checkpoint.ckpt.epoch]
    if (got["top1"], got["top5"]) != (record["test_top1"], record["test_top5"]):
        # Not bit-identical logits (another CPU's BLAS kernels, or kernels changed
        # since the epoch was logged): only near-ties may have flipped.
        _assert_same_top1(_logits(checkpoint.model, images, batch), labels, record["test_top1"], "tqref")
    assert got["loss"] == pytest.approx(record["test_loss"], rel=1e-4)


def _logits(model, images, batch):
    x = normalize(images)  # as tqref's batches normalise them
    with no_grad():
        return np.concatenate([model.forward(x[i:i + batch]) for i in range(0, len(x), batch)])


def _assert_same_top1(logits, labels, logged_top1, who):
    """Float32 sums in another order differ by ~1e-5 in the logits, which can
    only flip an image whose two highest logits lie closer than twice that;
    such near-ties are counted, and the number of correct images may differ
    from the logged one by at most their number."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    near_ties = int(np.sum(top2[:, 1] - top2[:, 0] < 2e-4))
    correct = int(np.sum(logits.argmax(axis=1) == labels))
    correct_logged = round(logged_top1 * len(labels))
    assert abs(correct - correct_logged) <= near_ties, \
        f"{who}: {correct} correct, logged: {correct_logged} of {len(labels)} ({near_ties} near-ties)"


# ---------------------------------------------------------------- (c) the same in PyTorch
@pytest.mark.long
@pytest.mark.parametrize("export_run", EXPORT_RUNS, ids=[run.name for run in EXPORT_RUNS])
def test_torch_export_gives_the_same_top1(export_run, cifar10_test, tmp_path):
    """The exported weights of the run's last.npz in a PyTorch ResNet of the
    same depth give the logged top-1, up to near-ties (``_assert_same_top1``;
    in practice there is none, and the top-1 is equal)."""
    checkpoint = _snapshot(export_run, "last.npz", tmp_path)
    model_name = checkpoint.ckpt.config["model"]
    if not model_name.startswith("resnet"):
        pytest.skip(f"no PyTorch reference for the {model_name} model")
    torch, net = torch_cifar_resnet(int(model_name[len("resnet"):]))
    exported, _, _ = tio.export_torch(checkpoint.path, tmp_path / "torch.npz")
    with np.load(exported, allow_pickle=False) as z:
        net.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files}, strict=True)
    net.eval()

    images, labels = _test_images(cifar10_test, checkpoint.ckpt.config)
    x = normalize(images)  # as tqref's batches normalise them
    with torch.no_grad():
        logits = np.concatenate([net(torch.from_numpy(x[i:i + 500])).numpy() for i in range(0, len(x), 500)])
    # the logits themselves, on the first batch
    with no_grad():
        np.testing.assert_allclose(logits[:256], checkpoint.model.forward(x[:256]), rtol=1e-4, atol=1e-4)

    _assert_same_top1(logits, labels, checkpoint.logged[checkpoint.ckpt.epoch]["test_top1"], "PyTorch")


# ---------------------------------------------------------------- (d) the packed file
def _packed_epoch(run_dir, path, metadata):
    """The logged epoch a packed file's metadata names, checked against the log."""
    epoch = metadata.get("epoch")
    assert epoch in {r["epoch"] for r in read_log(run_dir)}, (
        f"{path.name}: its metadata names epoch {epoch!r}, not a logged epoch "
        f"(export it with 'python -m tqref export CKPT OUT --format packed')")
    return epoch


@pytest.mark.long
def test_packed_export_is_the_export_of_its_checkpoint(run_dir, tmp_path):
    """Each packed file decodes to what exporting the checkpoint its metadata
    names gives now: same epoch, same layers, codes, α and folded BN.  With (b)
    (the checkpoint gives its logged top-1) and the engine's top-1 below (once
    per architecture), this vouches for every packed file without running the
    slow engine on each."""
    from tqref.deploy import export_packed, read_packed
    packed_files = sorted(run_dir.glob("*.packed.npz"))
    if not packed_files:
        pytest.skip(f"no packed export (*.packed.npz) in {run_dir.name}")
    for path in packed_files:
        _, metadata, layers = read_packed(path)
        epoch = _packed_epoch(run_dir, path, metadata)
        source = _snapshot(run_dir, metadata["checkpoint"], tmp_path)
        assert source.ckpt.epoch == epoch, \
            f"{path.name}: made from {metadata['checkpoint']} at epoch {epoch}, which now holds epoch {source.ckpt.epoch}"
        export_packed(source.model, tmp_path / "again.packed.npz", metadata=metadata)
        _, _, again = read_packed(tmp_path / "again.packed.npz")
        assert [layer.name for layer in layers] == [layer.name for layer in again]
        for layer, fresh in zip(layers, again):
            for field in ("codes", "alpha", "dense_weight", "scale", "shift"):
                got, want = getattr(layer, field), getattr(fresh, field)
                assert (got is None) == (want is None), f"{path.name} {layer.name}.{field}"
                if got is not None:
                    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=f"{path.name} {layer.name}.{field}")


@pytest.mark.long
@pytest.mark.parametrize("packed_run", PACKED_RUNS, ids=[run.name for run in PACKED_RUNS])
def test_packed_export_gives_the_same_top1(packed_run, cifar10_test):
    from tqref.deploy import load_packed
    for path in sorted(packed_run.glob("*.packed.npz")):
        model = load_packed(path)
        epoch = _packed_epoch(packed_run, path, model.metadata)
        logged = {r["epoch"]: r for r in read_log(packed_run)}[epoch]["test_top1"]
        images, labels = _test_images(cifar10_test, model.metadata.get("config") or {})
        got = evaluate(model, images, labels, 256)
        if got["top1"] != logged:  # the add-only engine sums in its own order
            _assert_same_top1(_logits(model, images, 256), labels, logged, path.name)


# ---------------------------------------------------------------- (e) the READMEs show compare's output
README_BEGIN, README_END = "<!-- refresh.py: begin -->", "<!-- refresh.py: end -->"
STATUS = re.compile(r"^- `([^`]+)`: (?:in progress, epoch (\d+) of \d+|finished \((\d+) epochs\)|not started)",
                    re.MULTILINE)
SHOWN_COMMAND = re.compile(r"^python -m tqref compare results/\*/ (.*)$", re.MULTILINE)


@pytest.mark.parametrize("readme", [RESULTS / "README.md", RESULTS.parent / "README.md"],
                         ids=["results/README.md", "README.md"])
def test_readme_tables_are_what_compare_prints_for_the_runs(readme, tmp_path, monkeypatch, capsys):
    """The README's section written by results/refresh.py lists every run
    folder with the epoch it had reached, and below each ``python -m tqref
    compare results/*/ FLAGS`` it shows stands, to the character, what that
    command prints for the runs cut back to those epochs (so this holds while
    the runs go on training)."""
    from tqref.cli import main

    text = readme.read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1, "run: python results/refresh.py"
    section = text.split(README_BEGIN)[1].split(README_END)[0]
    shown = {m.group(1): int(m.group(2) or m.group(3) or 0) for m in STATUS.finditer(section)}
    folders = sorted(p.parent.name for p in RESULTS.glob("*/config.json"))
    assert sorted(shown) == folders, f"{readme.name} lists other runs than results/ holds: " \
                                     "run python results/refresh.py"
    commands = SHOWN_COMMAND.findall(section)
    assert commands, f"{readme.name} shows no compare command: run python results/refresh.py"
    for name, epoch in shown.items():
        copy = tmp_path / "results" / name
        copy.mkdir(parents=True)
        shutil.copyfile(RESULTS / name / "config.json", copy / "config.json")
        records = [r for r in read_log(RESULTS / name) if r["epoch"] <= epoch]
        assert (records[-1]["epoch"] if records else 0) == epoch, f"{name}: epoch {epoch} is not in its log"
        (copy / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        for kept in ("last.npz", "result.json"):  # compression is read from last.npz
            if (RESULTS / name / kept).is_file():
                shutil.copyfile(RESULTS / name / kept, copy / kept)
    monkeypatch.chdir(tmp_path)
    for flags in commands:
        assert main(["compare", *(f"results/{name}" for name in shown), *flags.split()]) == 0
        printed = capsys.readouterr().out.strip()
        assert printed in section, f"compare {flags} prints other numbers: run python results/refresh.py"
