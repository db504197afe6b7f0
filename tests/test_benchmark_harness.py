"""benchmarks/harness.py: fresh processes, rotating order, the JSON report, atomic writes.

Fake contenders sleep a little and report *given* times, so the checks on
best and median are exact and nothing here depends on this machine's speed.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"tqref_benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load("harness")

FAKE_WORKER = """
import os, sys, time
sys.path.insert(0, {benchmarks!r})
import harness
name, log, times = sys.argv[1], sys.argv[2], [float(t) for t in sys.argv[3].split(",")]
with open(log, "a") as f:  # the order the processes really ran in
    f.write(f"{{name}} {{os.getpid()}}\\n")
time.sleep(0.01)
print("a library printing something first")
harness.emit({{"times_s": times, "items": 4, "check": [[1.0, 2.0]],
              "info": {{"name": name, "threads": os.environ.get("FAKE_THREADS")}}}})
"""


def fake(tmp_path, name, times, env=None):
    script = tmp_path / "fake_worker.py"
    if not script.exists():
        script.write_text(FAKE_WORKER.format(benchmarks=str(BENCHMARKS)))
    argv = [sys.executable, str(script), name, str(tmp_path / "order.log"), ",".join(map(str, times))]
    return harness.Contender(name, argv, env or {})


def test_round_order_rotates():
    assert harness.round_order(["A", "B", "C"], 0) == ["A", "B", "C"]
    assert harness.round_order(["A", "B", "C"], 1) == ["B", "C", "A"]
    assert harness.round_order(["A", "B", "C"], 2) == ["C", "A", "B"]
    assert harness.round_order(["A", "B", "C"], 3) == ["A", "B", "C"]
    assert harness.round_order([], 5) == []


def test_each_run_is_a_fresh_process_in_rotating_order(tmp_path):
    groups = {"g": [fake(tmp_path, n, [0.002, 0.001]) for n in ("A", "B", "C")]}
    report = harness.run(groups, rounds=3)
    expected = ["A", "B", "C", "B", "C", "A", "C", "A", "B"]
    assert [r["contender"] for r in report["runs"]] == expected
    lines = (tmp_path / "order.log").read_text().split()
    assert lines[0::2] == expected  # the processes really ran in that order
    assert len(set(lines[1::2])) == len(expected)  # one process per run
    assert [r["round"] for r in report["runs"]] == [0] * 3 + [1] * 3 + [2] * 3
    assert [r["position"] for r in report["runs"]] == [0, 1, 2] * 3


def test_report_shape_best_and_median(tmp_path):
    out = tmp_path / "results" / "report.json"
    groups = {"batch 1": [fake(tmp_path, "fast", [0.003, 0.001, 0.002], {"FAKE_THREADS": 2}),
                          fake(tmp_path, "slow", [0.010, 0.030, 0.020])],
              "batch 4": [fake(tmp_path, "fast", [0.5])]}
    report = harness.run(groups, rounds=2, out=out, command="python fake.py --x", meta={"what": "test"},
                         skipped={"absent": "not installed"})
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(report))
    for key in ("schema", "command", "started", "finished", "machine", "meta", "skipped", "rounds", "groups",
                "runs", "checks", "summary", "load"):
        assert key in on_disk, key
    assert on_disk["complete"] is True and on_disk["command"] == "python fake.py --x"
    assert on_disk["skipped"] == {"absent": "not installed"} and on_disk["meta"] == {"what": "test"}
    assert on_disk["groups"] == {"batch 1": ["fast", "slow"], "batch 4": ["fast"]}
    assert len(on_disk["runs"]) == 2 * 3
    fast = on_disk["summary"]["batch 1"]["fast"]
    assert fast["best_s"] == 0.001 and fast["median_s"] == 0.002 and fast["calls"] == 6 and fast["rounds"] == 2
    assert fast["round_medians_s"] == [0.002, 0.002] and fast["best_items_per_s"] == 4 / 0.001
    assert on_disk["summary"]["batch 1"]["slow"]["median_s"] == 0.020
    assert on_disk["checks"]["batch 1"]["slow"] == [[1.0, 2.0]]
    run = on_disk["runs"][0]
    for side in ("before", "after"):
        state = run[side]
        assert len(state["loadavg"]) == 3 and state["cpu_count"] == os.cpu_count() and state["usable_cpus"] >= 1
    assert run["wall_s"] > 0 and run["info"]["threads"] == "2"  # the contender's environment reached the worker
    assert set(on_disk["load"]) >= {"loadavg_1min_min", "loadavg_1min_max", "other_cores_busy_median", "idle"}
    assert not list(out.parent.glob("*.tmp"))


def test_report_is_written_after_every_run(tmp_path, monkeypatch):
    written = []
    real = harness.write_json
    monkeypatch.setattr(harness, "write_json", lambda path, data: written.append(data["complete"]) or real(path, data))
    harness.run({"g": [fake(tmp_path, "A", [0.1]), fake(tmp_path, "B", [0.1])]}, rounds=2,
                out=tmp_path / "r.json")
    assert written == [False] * 4 + [True]


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "r.json"
    harness.write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        harness.write_json(path, {"a": float("nan")})  # fails halfway through writing
    assert json.loads(path.read_text()) == {"a": 1}  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # and no temporary file is left


def test_a_failing_or_silent_worker_is_an_error(tmp_path):
    failing = harness.Contender("bad", [sys.executable, "-c", "import sys; sys.exit('worker broke')"])
    with pytest.raises(harness.HarnessError, match="(?s)bad.*status 1.*worker broke"):
        harness.run({"g": [failing]}, rounds=1)
    silent = harness.Contender("quiet", [sys.executable, "-c", "print('no result')"])
    with pytest.raises(harness.HarnessError, match="quiet.*no result line"):
        harness.run({"g": [silent]}, rounds=1)
    with pytest.raises(ValueError, match="unique"):
        harness.run({"g": [silent, silent]}, rounds=1)


def test_time_calls_and_emit(capsys):
    ticks = iter(range(100))
    calls = []
    times = harness.time_calls(lambda: calls.append(1), repeats=3, warmup=2, clock=lambda: next(ticks))
    assert times == [1, 1, 1] and len(calls) == 5
    harness.emit({"times_s": times})
    line = capsys.readouterr().out
    assert line.startswith(harness.RESULT_MARKER) and json.loads(line[len(harness.RESULT_MARKER):]) == {
        "times_s": [1, 1, 1]}
    with pytest.raises(ValueError):
        harness.emit({"times_s": []})


def test_inference_ratios_and_agreement():
    inference = _load("inference")
    summary = {"batch 1": {"tqref-packed": {"best_s": 1.0}, "tqref-dense": {"best_s": 2.0},
                           "pytorch-nchw": {"best_s": 4.0}, "pytorch-channels-last": {"best_s": 3.0}}}
    row = inference.ratios(summary)["batch 1"]
    assert row["pytorch_best_layout"] == "pytorch-channels-last"
    assert row["tqref-packed_vs_tqref-dense"] == 2.0 and row["tqref-packed_vs_pytorch-best-layout"] == 3.0
    assert row["tqref-packed_vs_pytorch-nchw"] == 4.0 and row["tqref-dense_vs_pytorch-best-layout"] == 1.5
    no_torch = inference.ratios({"b": {"tqref-packed": {"best_s": 1.0}, "tqref-dense": {"best_s": 2.0}}})["b"]
    assert no_torch == {"tqref-packed_vs_tqref-dense": 2.0}
    checks = {"batch 1": {"tqref-dense": [[1.0, -2.0]], "tqref-packed": [[1.0, -2.0002]]}}
    assert inference.agreement(checks)["batch 1"]["tqref-packed"] == pytest.approx(1e-4)


@pytest.mark.long
def test_inference_benchmark_runs_end_to_end(tmp_path):
    """One round, batch 1, tqref only: the script, its workers and its report work together."""
    inference = _load("inference")
    out = tmp_path / "inference.json"
    assert inference.main(["--no-torch", "--rounds", "1", "--batch-sizes", "1", "--repeats-small", "2",
                           "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["complete"] and report["agree"]
    assert report["command"].startswith("python benchmarks/inference.py --no-torch")
    assert set(report["summary"]["batch 1"]) == {"tqref-packed", "tqref-dense"}
    assert set(report["skipped"]) == {"pytorch-nchw", "pytorch-channels-last"}
    assert report["meta"]["model"]["packed"] == "results/resnet20-ternary/final.packed.npz"
    assert abs(report["meta"]["model"]["sparsity"] - report["meta"]["model"]["final_sparsity_logged"]) < 1e-12


def test_engine_variants_contenders_are_checked():
    variants = _load("engine_variants")
    repo = str(BENCHMARKS.parent)
    assert variants.parse_contender(f"mine={repo}:CHUNK=256,CHANNEL_BLOCK=8") == \
        ("mine", repo, {"CHUNK": 256, "CHANNEL_BLOCK": 8})
    assert variants.parse_contender(f"plain={repo}") == ("plain", repo, {})
    for text, message in ((repo, "expected NAME=CHECKOUT"), (f"x={repo}:CHUNK=big", "ATTR=INTEGER"),
                          ("x=/nonexistent", "expected a tqref checkout")):
        with pytest.raises(SystemExit, match=message):
            variants.parse_contender(text)


@pytest.mark.long
def test_engine_benchmarks_run_end_to_end(tmp_path):
    """engine_variants.py (one round, batch 1, this checkout against itself with another
    setting) and engine_roofline.py (batch 1) write their reports."""
    variants, roofline = _load("engine_variants"), _load("engine_roofline")
    out = tmp_path / "variants.json"
    repo = str(BENCHMARKS.parent)
    assert variants.main([f"a={repo}", f"b={repo}:PARALLEL_MIN_BATCH=1", "--rounds", "1", "--batch-sizes", "1",
                          "--repeats-small", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["complete"] and report["agree"] and set(report["speed_vs_first_best"]["batch 1"]) == {"a", "b"}
    out = tmp_path / "roofline.json"
    assert roofline.main(["--batches", "1", "--repeats", "1", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["layers"]["1"]) == 19 and report["summary"]["1"]["engine_s"] > 0


def test_train_roofline_counts():
    """Winograd's products are 2.25× fewer than the direct MACs where it applies (3×3,
    stride 1, ≥ 16 channels) and equal to them elsewhere; batch norm's bytes, now and at
    the floor, per direction."""
    roofline = _load("train_roofline")
    from tqref.nn.layers import Conv2d
    n = 2
    wide = roofline.conv_counts(Conv2d(16, 16, 3, padding=1, bias=False), (n, 16, 32, 32))
    assert wide["winograd"] and wide["direct_macs"]["forward"] == n * 16 * 16 * 9 * 32 * 32
    assert wide["direct_macs"]["forward"] == 2.25 * wide["products"]["forward"]
    strided = roofline.conv_counts(Conv2d(16, 32, 3, stride=2, padding=1, bias=False), (n, 16, 32, 32))
    assert not strided["winograd"] and strided["out_hw"] == 16
    assert strided["products"] == strided["direct_macs"] and strided["direct_macs"]["dw"] == n * 32 * 16 * 9 * 256
    first = roofline.conv_counts(Conv2d(3, 16, 3, padding=1, bias=False), (n, 3, 32, 32))
    assert not first["winograd"]
    a = n * 16 * 32 * 32 * 4
    assert roofline.bn_bytes((n, 16, 32, 32), residual=False) == {
        "forward": {"now": 3 * a, "floor": 2 * a}, "backward": {"now": 7 * a, "floor": 4 * a}}
    assert roofline.bn_bytes((n, 16, 32, 32), residual=True)["forward"] == {"now": 4 * a, "floor": 3 * a}
    assert roofline.bn_bytes((n, 16, 32, 32), residual=False, fused=False)["backward"] == {"now": 5 * a, "floor": 3 * a}


def test_train_roofline_reads_pytorch_from_the_fair_benchmark(tmp_path):
    roofline = _load("train_roofline")
    runs = [{"group": "resnet20 fp train, batch 128", "contender": c, "times_s": t}
            for c, t in (("tqref", [0.1]), ("pytorch-nchw", [0.3, 0.28]), ("pytorch-channels-last", [0.21, 0.2]),
                         ("pytorch-channels-last", [0.25]))]
    runs.append({"group": "resnet20 ternary train, batch 128", "contender": "pytorch-nchw", "times_s": [0.01]})
    path = tmp_path / "training.json"
    path.write_text(json.dumps({"command": "python benchmarks/training.py", "runs": runs}))
    ref = roofline.pytorch_reference(path, "resnet20")
    assert ref["best_layout"] == "pytorch-channels-last" and ref["best_s"] == 0.2
    assert ref["best_s_by_layout"]["pytorch-nchw"] == 0.28
    assert roofline.pytorch_reference(path, "resnet56") is None
    assert roofline.pytorch_reference(tmp_path / "missing.json", "resnet20") is None


def test_layer_benchmark_shapes_are_resnet20s():
    """The shapes and counts that layers.py times are those of the real ResNet-20."""
    from collections import Counter

    from tqref.models import get_model
    from tqref.nn.layers import BatchNorm2d, Conv2d
    layers = _load("layers")
    model = get_model("resnet20", seed=0)
    convs, bns, size = Counter(), Counter(), 32
    for name, m in model.named_modules():
        if isinstance(m, Conv2d):
            convs[("conv", m.in_channels, m.out_channels, size, m.stride)] += 1
            size //= m.stride
        elif isinstance(m, BatchNorm2d):
            kind = "bn-add" if name.endswith("bn2") else "bn"
            bns[(kind, m.num_features, m.num_features, size, 1)] += 1
    expected = convs + bns
    got = Counter({spec[:5]: spec[5] for spec in layers.SHAPES.values()})
    assert got == expected


@pytest.mark.long
def test_training_rooflines_run_end_to_end(tmp_path):
    """train_roofline.py (batch 4, one step) and layers.py (two shapes, one round; PyTorch
    NCHW too when torch is installed, whose gradients must agree) write their reports."""
    roofline, layers = _load("train_roofline"), _load("layers")
    out = tmp_path / "train_roofline.json"
    assert roofline.main(["--batch-size", "4", "--repeats", "1", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    kinds = [r["kind"] for r in report["layers"]]
    assert kinds.count("conv") == 19 and kinds.count("batchnorm") == 19
    assert report["summary"]["floor"]["step_s"] > 0 and "pytorch" not in report["summary"]
    out = tmp_path / "layers.json"
    contenders = ["tqref"] + (["pytorch-nchw"] if importlib.util.find_spec("torch") else [])
    assert layers.main(["--contenders", *contenders, "--shapes", "conv 16>32 @32 /2", "bn-add-relu @64x8",
                        "--rounds", "1", "--repeats", "2", "--batch", "4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["complete"] and report["agree"] and set(report["agreement"]["conv 16>32 @32 /2"]) == set(contenders)
