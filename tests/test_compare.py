"""``python -m tqref compare``: the numbers it prints against the run folders'
own log.jsonl, read here independently; the in-progress mark; the paper table,
filled by each run's settings whatever its folder is called; markdown and
JSON output; errors.  The runs are real ``Trainer`` runs of ResNet-20/32 on a
synthetic CIFAR-10 (one step of 32 images per epoch), a few seconds in all."""

import json
import re
import shutil

import numpy as np
import pytest

from tqref.cli import main
from tqref.compare import PAPER_TOP1, duration, paired_difference, paper_table, read_run
from tqref.data import load_cifar10, write_synthetic_cifar10
from tqref.train import TrainConfig, Trainer


class Stop(Exception):
    pass


def _stop_after(epoch):
    def hook(done, record):
        if done == epoch:
            raise Stop
    return hook


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders named so that a folder name never gives away the settings:

        a         resnet20 full precision, 2/2 epochs (lr halved after the first), finished
        b         resnet20 ternary t_ex=1, a's schedule, stopped after 2 of 3 epochs (in progress)
        c         resnet20 ternary t_ex=2, 1/1 epoch, finished
        resnet20-fp   a resnet32 full-precision run, 1/1 epoch, finished
        small     the small net (fits no cell of the paper's table)
        d         resnet20 ternary t_ex=1 fine-tuned from a's last.npz, 1/1 epoch, finished
    """
    pytest.importorskip("tqref.ternary")
    root = tmp_path_factory.mktemp("runs")
    data = load_cifar10(write_synthetic_cifar10(tmp_path_factory.mktemp("cifar"), images_per_batch=32),
                        verbose=False)

    def run(name, stop_after=None, **settings):
        config = TrainConfig(batch_size=32, train_subset=32, lr=0.05, **settings)
        trainer = Trainer(config, root / name, data=data, log=lambda line: None, progress=False)
        if stop_after is None:
            trainer.fit()
        else:
            with pytest.raises(Stop):
                trainer.fit(on_epoch_end=_stop_after(stop_after))
        return root / name

    return {"a": run("a", model="resnet20", epochs=2, milestones=(1,), gammas=(0.5,)),
            "b": run("b", model="resnet20", ternary=True, epochs=3, milestones=(1,), gammas=(0.5,), stop_after=2),
            "c": run("c", model="resnet20", ternary=True, t_ex=2, epochs=1),
            "resnet20-fp": run("resnet20-fp", model="resnet32", epochs=1),
            "small": run("small", model="small", epochs=1),
            "d": run("d", model="resnet20", ternary=True, epochs=1, init_from=str(root / "a" / "last.npz")),
            "data": data}


def _log(run_dir):
    """log.jsonl read here, without tqref."""
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _expected(run_dir):
    """The figures compare should print, computed from the log by hand."""
    log = _log(run_dir)
    top1 = [r["test_top1"] for r in log]
    best = int(np.argmax(top1))  # the first of equal values
    return {"final": top1[-1], "best": top1[best], "best_epoch": log[best]["epoch"],
            "wall": sum(r["epoch_seconds"] for r in log), "images_per_s": np.mean([r["images_per_s"] for r in log]),
            "epochs": log[-1]["epoch"], "sparsity": log[-1].get("sparsity")}


def _pct(fraction):
    return f"{100 * fraction:.2f}"


def _text_rows(out):
    """A text table (header, rule, rows; a blank line ends it) as dicts
    column -> cell; cells are separated by two spaces or more."""
    lines = out.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = []
    for line in lines[2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells)))
    return rows


def _markdown_rows(out):
    lines = [line for line in out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    assert set(lines[1]) <= set("|-:")
    return [dict(zip(header, [c.strip() for c in line.strip("|").split(" | ")])) for line in lines[2:]]


def _compare(capsys, *argv):
    assert main(["compare", *map(str, argv)]) == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------- one row per run
def test_text_table_matches_the_logs(runs, capsys):
    names = ["a", "b", "c", "resnet20-fp"]
    rows = _text_rows(_compare(capsys, *(runs[n] for n in names)))
    assert [r["run"] for r in rows] == [str(runs[n]) for n in names]
    for name, row in zip(names, rows):
        e = _expected(runs[name])
        assert row["final top-1 %"] == _pct(e["final"]), name
        assert row["best top-1 % (epoch)"] == f"{_pct(e['best'])} ({e['best_epoch']})", name
        assert row["wall time"] == duration(e["wall"]), name
        assert row["images/s"] == f"{e['images_per_s']:.0f}", name
        # milestones after the last epoch are not shown
        assert row["schedule"] == ("lr 0.05, x0.5 at epoch 1" if name in ("a", "b") else "lr 0.05"), name
    a, b, c, r32 = rows
    assert (a["model"], a["quantization"], a["status"]) == ("resnet20", "full precision", "finished")
    assert (b["quantization"], b["status"]) == ("ternary t_ex=1", "in progress (epoch 2/3)")
    assert (c["quantization"], c["status"]) == ("ternary t_ex=2", "finished")
    assert (r32["model"], r32["status"]) == ("resnet32", "finished")
    # the summary's whole-model figures for ResNet-20 (README: 14.84x and 7.71x)
    assert (a["compression"], b["compression"], c["compression"]) == ("—", "14.84×", "7.71×")
    assert a["sparsity"] == "—"
    for name, row in (("b", b), ("c", c)):
        sparsity = _expected(runs[name])["sparsity"]
        assert 0 < sparsity < 1 and row["sparsity"] == f"{100 * sparsity:.1f} %"


def test_json_holds_the_logged_numbers(runs, capsys):
    out = json.loads(_compare(capsys, runs["a"], runs["b"], "--json"))
    assert isinstance(out, list) and [r["run"] for r in out] == [str(runs["a"]), str(runs["b"])]
    for name, got in zip("ab", out):
        e = _expected(runs[name])
        assert got["final_top1"] == e["final"] and got["best_top1"] == e["best"]
        assert got["best_epoch"] == e["best_epoch"] and got["epochs_done"] == e["epochs"]
        assert got["wall_seconds"] == pytest.approx(e["wall"], rel=1e-12)
        assert got["images_per_s"] == pytest.approx(e["images_per_s"], rel=1e-12)
    assert (out[0]["finished"], out[0]["epochs_planned"], out[0]["sparsity"]) == (True, 2, None)
    assert (out[1]["finished"], out[1]["epochs_planned"], out[1]["status"]) == (False, 3, "in progress (epoch 2/3)")
    assert out[1]["sparsity"] == _expected(runs["b"])["sparsity"]


def test_best_is_the_first_epoch_with_the_highest_top1(runs, tmp_path, capsys):
    """A log whose final epoch is not its best, with a tie for the best:
    compare names the first of the tied epochs, as best.npz holds it."""
    run = tmp_path / "edited"
    shutil.copytree(runs["b"], run)
    record = _log(run)[0]
    lines = [json.dumps({**record, "epoch": k + 1, "test_top1": top1, "epoch_seconds": 1800.0})
             for k, top1 in enumerate([0.30, 0.55, 0.55, 0.41])]
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    row = _text_rows(_compare(capsys, run))[0]
    assert row["final top-1 %"] == "41.00" and row["best top-1 % (epoch)"] == "55.00 (2)"
    assert row["wall time"] == "2 h 00 min"
    assert row["status"] == "in progress (epoch 4/3)"  # no result.json: not finished


def test_an_extended_run_is_in_progress_despite_its_result_json(runs, tmp_path):
    run = tmp_path / "extended"
    shutil.copytree(runs["c"], run)
    Trainer({"epochs": 3}, run, resume=True, data=runs["data"], log=lambda line: None, progress=False)
    assert (run / "result.json").is_file()  # from the first, 1-epoch session
    got = read_run(run)
    assert (got["finished"], got["status"]) == (False, "in progress (epoch 1/3)")


def test_a_run_before_its_first_epoch(runs, tmp_path, capsys):
    run = tmp_path / "starting"
    Trainer(TrainConfig(model="small", epochs=5, train_subset=32), run, data=runs["data"], log=lambda line: None,
            progress=False)
    assert (run / "config.json").is_file() and not (run / "log.jsonl").exists()
    row = _text_rows(_compare(capsys, run))[0]
    assert row["status"] == "in progress (epoch 0/5)"
    assert row["final top-1 %"] == row["best top-1 % (epoch)"] == row["wall time"] == "—"


def test_markdown_table(runs, capsys):
    out = _compare(capsys, runs["a"], runs["b"], "--markdown")
    assert out.splitlines()[1].startswith("|---|---|")
    rows = _markdown_rows(out)
    assert [r["run"] for r in rows] == [str(runs["a"]), str(runs["b"])]
    e = _expected(runs["b"])
    assert rows[1]["final top-1 %"] == _pct(e["final"]) and rows[1]["status"] == "in progress (epoch 2/3)"


def test_duration():
    assert [duration(s) for s in (0.4, 59.9, 60, 754.2, 3599, 3600, 11230)] == \
        ["0 s", "59 s", "1 min 00 s", "12 min 34 s", "59 min 59 s", "1 h 00 min", "3 h 07 min"]


# ---------------------------------------------------------------- the paper's table
def test_paper_table_places_runs_by_their_settings(runs, capsys):
    argv = [runs[n] for n in ("a", "b", "c", "resnet20-fp", "small")]
    out = _compare(capsys, *argv, "--paper-table")
    rows = {r["model"]: r for r in _text_rows(out)}
    assert list(rows) == ["ResNet-20", "ResNet-32", "ResNet-44", "ResNet-56"]
    for model, (fp, ternary) in PAPER_TOP1.items():
        row = rows[f"ResNet-{model[6:]}"]
        assert (row["paper FP"], row["paper ternary"]) == (f"{fp:.2f}", f"{ternary:.2f}")
    assert rows["ResNet-20"]["paper FP"] == "91.70" and rows["ResNet-56"]["paper ternary"] == "92.86"

    def cell(name):
        e = _expected(runs[name])
        return f"{_pct(e['final'])} (best {_pct(e['best'])}, epoch {e['best_epoch']})"

    r20, r32 = rows["ResNet-20"], rows["ResNet-32"]
    assert r20["tqref FP"] == cell("a")
    assert r20["tqref ternary"] == cell("b") + "; in progress (epoch 2/3)"
    assert r20["tqref t_ex=2"] == cell("c")
    # the folder called resnet20-fp holds a ResNet-32 run: it goes to the ResNet-32 row
    assert r32["tqref FP"] == cell("resnet20-fp")
    assert r32["tqref ternary"] == r32["tqref t_ex=2"] == r32["compression"] == "—"
    assert set(rows["ResNet-44"].values()) - {"ResNet-44", "92.47", "92.71"} == {"—"}
    assert r20["compression"] == "14.84× (t_ex=2: 7.71×)"
    s_b, s_c = _expected(runs["b"])["sparsity"], _expected(runs["c"])["sparsity"]
    assert r20["sparsity"] == f"{100 * s_b:.1f} % (t_ex=2: {100 * s_c:.1f} %)"
    assert "Not in the table" in out and f"{runs['small']} (small, full precision)" in out


def test_paper_table_states_the_gap_to_full_precision(runs, capsys):
    """Ternary minus full precision in points, final and best epochs, computed
    here from the logs; marked in progress (with the epochs) while a run is."""
    def points(name, key):
        return f"{100 * (_expected(runs[name])[key] - _expected(runs['a'])[key]):+.2f}"

    out = _compare(capsys, runs["a"], runs["c"], "--paper-table", "--markdown")
    assert (f"ResNet-20: t_ex=2 {points('c', 'final')} ({points('c', 'best')}), paper -0.05 (best epochs)."
            in out)
    out = _compare(capsys, runs["a"], runs["b"], runs["c"], "--paper-table", "--markdown")
    assert (f"ResNet-20: t_ex=1 {points('b', 'final')} ({points('b', 'best')}), "
            f"t_ex=2 {points('c', 'final')} ({points('c', 'best')}), paper -0.05 (best epochs) "
            f"— in progress, at epochs 2, 2, 1." in out)
    # no full-precision run, or no ternary one: no gap
    for alone in (runs["b"], runs["a"]):
        assert "minus full precision" not in _compare(capsys, alone, "--paper-table")


def test_paper_table_as_markdown_and_json(runs, capsys):
    rows = _markdown_rows(_compare(capsys, runs["b"], "--paper-table", "--markdown"))
    assert [r["model"] for r in rows] == ["ResNet-20", "ResNet-32", "ResNet-44", "ResNet-56"]
    assert rows[0]["tqref FP"] == "—" and rows[0]["tqref ternary"].endswith("; in progress (epoch 2/3)")

    out = json.loads(_compare(capsys, runs["a"], runs["c"], runs["resnet20-fp"], "--paper-table", "--json"))
    assert [r["model"] for r in out] == ["resnet20", "resnet32", "resnet44", "resnet56"]
    assert out[0]["paper_top1_percent"] == {"fp": 91.70, "ternary": 91.65}
    assert out[0]["fp"]["run"] == str(runs["a"]) and out[0]["ternary"] is None
    assert out[0]["ternary_tex2"]["final_top1"] == _expected(runs["c"])["final"]
    assert out[1]["fp"]["model"] == "resnet32" and out[2]["fp"] is None


def test_paper_table_refuses_two_runs_for_one_cell(runs, tmp_path, capsys):
    twin = tmp_path / "twin"
    shutil.copytree(runs["a"], twin)
    line = _error(capsys, ["compare", str(runs["a"]), str(twin), "--paper-table"])
    assert str(runs["a"]) in line and str(twin) in line and "pass only the one to show" in line
    # one row per run is fine with both
    assert len(_text_rows(_compare(capsys, runs["a"], twin))) == 2


def test_variants_do_not_fill_the_papers_cells(runs, tmp_path):
    run = tmp_path / "twn"
    shutil.copytree(runs["b"], run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "variant": "twn"}))
    got = read_run(run)
    assert got["quantization"] == "ternary t_ex=1, twn"
    rows, left_out = paper_table([got])
    assert rows[0]["ternary"] is None and left_out == [got]


def test_a_fine_tuned_run_says_so_and_leaves_the_from_scratch_cells_alone(runs, capsys):
    got = read_run(runs["d"])
    assert got["init_from"] == str(runs["a"] / "last.npz") and read_run(runs["b"])["init_from"] is None
    assert got["schedule"] == "fine-tuned from a/last.npz; lr 0.05"  # milestones beyond epoch 1 are not shown
    rows, left_out = paper_table([read_run(runs[n]) for n in ("a", "b", "d")])
    assert rows[0]["ternary"]["run"] == str(runs["b"]) and [r["run"] for r in left_out] == [str(runs["d"])]
    # alone it still does not take the from-scratch ternary cell; the t_ex = 2 cell takes a fine-tuned run
    rows, left_out = paper_table([got, {**read_run(runs["c"]), "init_from": "fp/last.npz"}])
    assert rows[0]["ternary"] is None and rows[0]["ternary_tex2"]["run"] == str(runs["c"]) and left_out == [got]
    out = _compare(capsys, runs["d"], "--paper-table", "--markdown")  # markdown: notes on one line
    assert f"{runs['d']} (resnet20, ternary t_ex=1, fine-tuned)" in out


# ---------------------------------------------------------------- bad input
def _error(capsys, argv, status=2):
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def test_not_a_run_folder(runs, tmp_path, capsys):
    line = _error(capsys, ["compare", str(runs["a"]), str(tmp_path / "nowhere")])
    assert f"{tmp_path / 'nowhere'} does not exist" in line
    (tmp_path / "empty").mkdir()
    line = _error(capsys, ["compare", str(tmp_path / "empty")])
    assert f"{tmp_path / 'empty'} is not a run folder: it has no config.json" in line
    line = _error(capsys, ["compare", str(runs["a"] / "log.jsonl")])
    assert f"{runs['a'] / 'log.jsonl'} is a file" in line
    # the folder that holds the runs: say so
    line = _error(capsys, ["compare", str(runs["a"].parent)])
    assert "it holds run folders (a, b, c, d, resnet20-fp, small): pass those" in line
    assert capsys.readouterr().out == ""  # nothing printed before the error


def test_unreadable_config_and_log(runs, tmp_path, capsys):
    run = tmp_path / "broken"
    shutil.copytree(runs["a"], run)
    (run / "config.json").write_text("{\"model\": ")
    assert f"{run / 'config.json'}: not valid JSON" in _error(capsys, ["compare", str(run)])
    (run / "config.json").write_text(json.dumps({"model": "resnet20", "colour": "red"}))
    assert "not the settings of a tqref run: TrainConfig: unknown setting(s) ['colour']" in \
        _error(capsys, ["compare", str(run)])
    shutil.copy(runs["a"] / "config.json", run / "config.json")
    (run / "log.jsonl").write_text(json.dumps({"epoch": 1, "test_top1": 0.5}) + "\n")
    line = _error(capsys, ["compare", str(run)])
    assert f"{run / 'log.jsonl'}: the record of epoch 1 lacks images_per_s, epoch_seconds" in line


def test_markdown_and_json_exclude_each_other(runs, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(runs["a"]), "--markdown", "--json"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("RUN_DIR", "--paper-table", "--markdown", "--json", "in progress", "not by folder name"):
        assert words in text, words
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "compare" in capsys.readouterr().out


# ---------------------------------------------------------------- paired_difference
def _pairs(only_a, only_b, both, neither):
    """Correctness vectors with the given counts of each kind of image, shuffled."""
    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * neither, dtype=bool)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * neither, dtype=bool)
    order = np.random.default_rng(0).permutation(a.size)
    return a[order], b[order]


def test_paired_difference_by_hand():
    # 3 images only a gets right, none only b: the three coins all fell a's way,
    # P = 2 · (1/2)^3 = 0.25 two-sided; the difference is -3/10.
    a, b = _pairs(3, 0, 5, 2)
    out = paired_difference(a, b)
    assert (out["n"], out["only_a"], out["only_b"]) == (10, 3, 0)
    assert out["difference"] == pytest.approx(-0.3, abs=1e-15)
    assert out["difference"] == pytest.approx(b.mean() - a.mean(), abs=1e-15)
    # d_i = -1 on 3 images, 0 on 7: mean -0.3, population variance 0.3 - 0.09 = 0.21
    assert out["standard_error"] == pytest.approx(np.sqrt(0.21 / 10), rel=1e-12)
    assert out["p_value"] == pytest.approx(0.25, rel=1e-12)
    # 2 against 1: P(X <= 1) = (1 + 3)/8, doubled: 1.0
    assert paired_difference(*_pairs(2, 1, 0, 0))["p_value"] == 1.0


def test_paired_difference_is_the_mean_and_standard_error_of_the_per_image_difference():
    rng = np.random.default_rng(1)
    a = rng.random(5000) < 0.88
    b = np.where(rng.random(5000) < 0.9, a, ~a)  # agree on about 90 % of the images
    out = paired_difference(a, b)
    d = b.astype(float) - a.astype(float)
    assert out["difference"] == pytest.approx(d.mean(), abs=1e-15)
    assert out["standard_error"] == pytest.approx(d.std() / np.sqrt(d.size), rel=1e-12)
    swapped = paired_difference(b, a)
    assert swapped["difference"] == -out["difference"] and swapped["p_value"] == out["p_value"]


def test_paired_difference_p_value_against_the_binomial_distribution():
    # only_b ~ Binomial(m, 1/2) when both models are equally good: the two-sided
    # p-value sums the probabilities of every outcome at least as far from m/2
    from math import comb
    for only_a, only_b in [(0, 0), (0, 1), (7, 7), (12, 30), (400, 340)]:
        m = only_a + only_b
        probs = [comb(m, k) / 2 ** m for k in range(m + 1)]
        far = [p for k, p in enumerate(probs) if abs(k - m / 2) >= abs(only_b - m / 2)]
        expected = min(1.0, sum(far))
        got = paired_difference(*_pairs(only_a, only_b, 3, 1))["p_value"]
        assert got == pytest.approx(expected, rel=1e-9), (only_a, only_b)
    # identical models: nothing to tell them apart
    same = np.array([True, False, True])
    assert paired_difference(same, same) == {"n": 3, "only_a": 0, "only_b": 0, "difference": 0.0,
                                             "standard_error": 0.0, "p_value": 1.0}


@pytest.mark.parametrize("a, b, message", [
    ([True, False], np.array([True, False]), "correct_a: expected a non-empty 1-D bool array.*got list"),
    (np.array([1, 0]), np.array([True, False]), "correct_a: .*got 1-D int64 array"),
    (np.array([True, False]), np.zeros((2, 1), bool), "correct_b: .*got 2-D bool array of shape \\(2, 1\\)"),
    (np.array([], bool), np.array([], bool), "correct_a: expected a non-empty"),
    (np.array([True, False]), np.array([True, False, True]), "same test images, got shapes \\(2,\\) and \\(3,\\)"),
])
def test_paired_difference_rejects_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b)


# ---------------------------------------------------------------- seeds of one configuration
def _seed_run(runs, tmp_path, name, source, seed, top1s):
    """A copy of run ``source`` as seed ``seed`` whose log's test top-1 are ``top1s``."""
    run = tmp_path / name
    shutil.copytree(runs[source], run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "seed": seed, "epochs": len(top1s)}))
    record = _log(run)[0]
    (run / "log.jsonl").write_text("".join(json.dumps({**record, "epoch": k + 1, "test_top1": v}) + "\n"
                                           for k, v in enumerate(top1s)))
    return run


def test_seed_groups_mean_std_and_paired_gaps(runs, tmp_path, capsys):
    from tqref.compare import seed_gaps, seed_groups
    fp = [_seed_run(runs, tmp_path, f"fp{s}", "a", s, [0.5, v]) for s, v in enumerate([0.80, 0.82, 0.78])]
    tern = [_seed_run(runs, tmp_path, f"t{s}", "b", s, [0.5, v]) for s, v in enumerate([0.79, 0.80, 0.775])]
    for folder in tern:  # finished: result.json and every planned epoch
        (folder / "result.json").write_text("{}")
    groups = seed_groups([read_run(f) for f in fp + tern])
    assert [(g["quantization"], g["n"], g["seeds"]) for g in groups] == \
        [("full precision", 3, [0, 1, 2]), ("ternary t_ex=1", 3, [0, 1, 2])]
    assert groups[0]["final_top1"] == pytest.approx(0.80) and groups[0]["final_top1_std"] == pytest.approx(0.02)
    assert groups[0]["best_top1"] == pytest.approx(0.80)
    (gap,) = seed_gaps(groups)
    d = np.array([0.79 - 0.80, 0.80 - 0.82, 0.775 - 0.78])
    assert (gap["a"], gap["b"], gap["seeds"]) == ("full precision", "ternary t_ex=1", [0, 1, 2])
    assert gap["mean"] == pytest.approx(d.mean())
    assert gap["standard_error"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert gap["t"] == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(3)))
    assert 0.05 < gap["p_value"] < 0.2                              # t = -2.65 on 2 d.f.: p = 0.118
    assert gap["p_value"] == pytest.approx(0.1177, abs=5e-4)
    # the command line: one row per configuration, then the gap in words
    out = _compare(capsys, *fp, *tern, "--seeds", "--markdown")
    assert "80.00 ± 2.00" in out and "ternary t_ex=1 − full precision = -1.17 points (mean of 3 seed(s)" in out
    # the paper's table: one cell, mean ± std over the seeds
    rows = {r["model"]: r for r in _text_rows(_compare(capsys, *fp, *tern, "--paper-table"))}
    assert rows["ResNet-20"]["tqref FP"] == "80.00 ± 2.00 (best 80.00 ± 2.00; n=3)"


def test_a_gap_counts_only_seeds_both_have_finished(runs, tmp_path):
    from tqref.compare import seed_gaps, seed_groups
    fp = [_seed_run(runs, tmp_path, f"fp{s}", "a", s, [0.5, 0.8]) for s in (0, 1)]
    tern = [_seed_run(runs, tmp_path, f"t{s}", "b", s, [0.5, 0.7]) for s in (0, 1, 2)]
    (tern[0] / "result.json").write_text("{}")                      # t1, t2 still training
    groups = seed_groups([read_run(f) for f in fp + tern])
    assert groups[1]["status"] == "1 of 3 finished (the mean is theirs), the others at epochs 2/2, 2/2"
    # the mean is over the finished run only: an unfinished run's accuracy is not a final one
    assert groups[1]["n_averaged"] == 1 and groups[1]["final_top1"] == pytest.approx(0.7)
    assert groups[1]["final_top1_std"] is None
    (gap,) = seed_gaps(groups)
    assert gap["seeds"] == [0] and gap["standard_error"] is None and gap["p_value"] is None


def test_a_seed_groups_sparsity_is_over_the_runs_its_accuracy_is(runs, tmp_path):
    from tqref.compare import seed_groups
    tern = [_seed_run(runs, tmp_path, f"t{s}", "b", s, [0.5, 0.7]) for s in (0, 1)]
    (tern[0] / "result.json").write_text("{}")                      # t1 still training
    record = _log(tern[1])[-1]
    (tern[1] / "log.jsonl").write_text(json.dumps({**record, "epoch": 1, "sparsity": 0.1}) + "\n")
    read = [read_run(f) for f in tern]
    assert read[0]["sparsity"] != 0.1 and read[1]["sparsity"] == 0.1
    (group,) = seed_groups(read)
    assert group["n_averaged"] == 1 and group["sparsity"] == read[0]["sparsity"]   # not the mean with 0.1
    (tern[1] / "log.jsonl").write_text("".join(json.dumps({**record, "epoch": k, "sparsity": 0.1}) + "\n"
                                               for k in (1, 2)))
    (tern[1] / "result.json").write_text("{}")                      # both finished: the mean of both
    (group,) = seed_groups([read_run(f) for f in tern])
    assert group["sparsity"] == pytest.approx((read[0]["sparsity"] + 0.1) / 2)


def test_rows_split_by_schedule(runs, tmp_path, capsys):
    other = _seed_run(runs, tmp_path, "other", "a", 0, [0.5, 0.6, 0.7])   # 3 epochs: another schedule
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "milestones": [2], "gammas": [0.1]}))
    rows = [r["model"] for r in _text_rows(_compare(capsys, runs["a"], other, "--paper-table"))]
    assert rows[:2] == ["ResNet-20 (lr 0.05, x0.5 at epoch 1)", "ResNet-20 (lr 0.05, x0.1 at epoch 2)"]


@pytest.mark.parametrize("t, df, p", [(2.776445, 4, 0.05), (2.228139, 10, 0.05), (12.7062, 1, 0.05),
                                      (5.840909, 3, 0.01), (0.0, 5, 1.0), (-2.228139, 10, 0.05)])
def test_student_t_against_the_tables_critical_values(t, df, p):
    from tqref.compare import student_t_two_sided_p
    assert student_t_two_sided_p(t, df) == pytest.approx(p, abs=1e-6)


def test_student_t_bad_df():
    from tqref.compare import student_t_two_sided_p
    with pytest.raises(ValueError, match="df: expected a positive integer, got 0"):
        student_t_two_sided_p(1.0, 0)


@pytest.mark.parametrize("confidence, df, q", [(0.95, 3, 3.182446), (0.95, 1, 12.7062), (0.99, 3, 5.840909),
                                               (0.95, 10, 2.228139), (0.90, 4, 2.131847)])
def test_student_t_quantile_against_the_tables(confidence, df, q):
    from tqref.compare import student_t_quantile
    assert student_t_quantile(confidence, df) == pytest.approx(q, rel=1e-5)


def _gap(model, a, b, differences):
    from tqref.compare import student_t_two_sided_p
    d = np.array(differences)
    n = d.size
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    t = float(d.mean() / se) if se else None
    return {"model": model, "schedule": "30 epochs", "a": a, "b": b, "seeds": list(range(n)),
            "differences": d.tolist(), "n": n, "mean": float(d.mean()), "standard_error": se, "t": t,
            "p_value": student_t_two_sided_p(t, n - 1) if t is not None else None}


FP, T1, T2 = "full precision", "ternary t_ex=1", "ternary t_ex=2"


@pytest.mark.parametrize("gap, verdict", [
    # ResNet-20: the paper's ternary net is 0.05 points below full precision -> bound -0.0005
    (_gap("resnet20", FP, T1, [-0.0070, -0.0060, -0.0065, -0.0075]), "contradicted"),
    (_gap("resnet20", FP, T1, [0.0010, 0.0005, 0.0020, 0.0000]), "supported"),
    (_gap("resnet20", FP, T1, [-0.0040, 0.0030, -0.0010, 0.0025]), "undecided"),
    (_gap("resnet20", FP, T1, [-0.0100]), "undecided"),                      # one seed
    # ResNet-56: the paper's ternary net beats full precision -> bound 0
    (_gap("resnet56", FP, T1, [0.0010, 0.0015, 0.0012]), "supported"),
    (_gap("resnet56", FP, T1, [-0.0010, -0.0015, -0.0012]), "contradicted"),
    # residual expansion: t_ex = 2 beats t_ex = 1
    (_gap("resnet20", T1, T2, [0.0030, 0.0050, 0.0040]), "supported"),
])
def test_claim_verdicts(gap, verdict):
    from tqref.compare import claim_verdicts, student_t_quantile
    (c,) = claim_verdicts([gap])
    assert c["verdict"] == verdict, c["reason"]
    assert c["bound"] == pytest.approx(-0.0005 if gap["model"] == "resnet20" and gap["b"] == T1 else 0.0)
    if gap["n"] > 1:   # the interval is mean ± t-quantile · standard error, and it decides
        half = student_t_quantile(0.95, gap["n"] - 1) * gap["standard_error"]
        assert c["interval"] == pytest.approx((gap["mean"] - half, gap["mean"] + half))
        low, high = c["interval"]
        assert verdict == ("supported" if low >= c["bound"] else "contradicted" if high < c["bound"]
                           else "undecided")
    else:
        assert c["interval"] is None and "one seed" in c["reason"]


def test_claim_verdicts_skip_gaps_the_paper_says_nothing_about():
    from tqref.compare import claim_verdicts
    assert claim_verdicts([_gap("resnet20", FP, T2, [0.001, 0.002])]) == []
    assert claim_verdicts([_gap("resnet110", FP, T1, [0.001, 0.002])]) == []     # not in the paper's table
    with pytest.raises(ValueError, match="confidence: expected a number between 0 and 1, got 95"):
        claim_verdicts([], confidence=95)


def test_compare_seeds_prints_the_claims_verdict(runs, tmp_path, capsys):
    fp = [_seed_run(runs, tmp_path, f"fp{s}", "a", s, [0.5, v]) for s, v in enumerate([0.80, 0.82, 0.78])]
    tern = [_seed_run(runs, tmp_path, f"t{s}", "b", s, [0.5, v]) for s, v in enumerate([0.79, 0.80, 0.775])]
    for folder in tern:
        (folder / "result.json").write_text("{}")
    out = _compare(capsys, *fp, *tern, "--seeds", "--markdown")
    # gaps -1, -2, -0.5 points: t_0.975,2 = 4.303, se = 0.441 -> -3.06 to +0.73, which contains -0.05
    assert ("The paper's claim for ResNet-20, ternarizing costs at most 0.05 points (paper: 91.70 → 91.65): "
            "UNDECIDED") in out
    assert "-3.06 to +0.73 points, contains -0.05: more seeds would be needed" in out
    data = json.loads(_compare(capsys, *fp, *tern, "--seeds", "--json"))
    assert [c["verdict"] for c in data["claims"]] == ["undecided"]
