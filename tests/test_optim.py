"""Tests for tqref.optim: SGD against hand computations, a plain-Python
reference and (when installed) torch.optim.SGD; state dicts; schedules."""

import math

import numpy as np
import pytest

from tqref.optim import SGD, ConstantLR, CosineLR, LinearWarmup, MultiStepLR, paper_schedule


# ------------------------------------------------------------------ helpers
def make_problem(dtype=np.float64, seed=0):
    """A tiny least-squares-like problem: two parameters of different shapes
    whose gradient is a fixed linear function of the parameters, so every
    step's gradient depends on the previous updates."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    a_w = rng.uniform(0.5, 2.0, w.shape).astype(dtype)
    a_b = rng.uniform(0.5, 2.0, b.shape).astype(dtype)
    t_w = rng.standard_normal(w.shape).astype(dtype)
    t_b = rng.standard_normal(b.shape).astype(dtype)
    params = {"w": w, "b": b}
    grads = {"w": np.zeros_like(w), "b": np.zeros_like(b)}
    coeffs = {"w": (a_w, t_w), "b": (a_b, t_b)}

    def backward():
        # gradient of ½ Σ a (p − t)², written into the grad arrays in place
        # as the model's backward does
        for k in params:
            a, t = coeffs[k]
            np.multiply(a, params[k] - t, out=grads[k])

    triples = [(k, params[k], grads[k]) for k in ("w", "b")]
    return params, grads, backward, triples, coeffs


def reference_sgd(p0, grad_fn, n_steps, lr, momentum, nesterov, weight_decay, dampening):
    """One scalar at a time, straight from the equations (PyTorch's rule)."""
    p = [float(x) for x in p0]
    v = [None] * len(p)
    for _ in range(n_steps):
        g = grad_fn(p)
        for i in range(len(p)):
            d = g[i] + weight_decay * p[i]
            if momentum != 0:
                if v[i] is None:
                    v[i] = d
                else:
                    v[i] = momentum * v[i] + (1 - dampening) * d
                s = d + momentum * v[i] if nesterov else v[i]
            else:
                s = d
            p[i] = p[i] - lr * s
    return np.array(p)


# ---------------------------------------------------------- SGD arithmetic
def test_sgd_hand_computed_momentum():
    # p = 1, constant gradient 1, η = 0.1, μ = 0.9:
    #   v = 1, 1.9, 2.71   →   p = 0.9, 0.71, 0.439
    p, g = np.array([1.0]), np.array([1.0])
    opt = SGD([("p", p, g)], lr=0.1, momentum=0.9)
    got = []
    for _ in range(3):
        opt.step()
        got.append(p[0])
    assert got == pytest.approx([0.9, 0.71, 0.439], abs=1e-15)


def test_sgd_hand_computed_nesterov():
    # s = g + μ·v:  v = 1 → s = 1.9, p = 0.81;  v = 1.9 → s = 2.71, p = 0.539
    p, g = np.array([1.0]), np.array([1.0])
    opt = SGD([("p", p, g)], lr=0.1, momentum=0.9, nesterov=True)
    opt.step()
    assert p[0] == pytest.approx(0.81, abs=1e-15)
    opt.step()
    assert p[0] == pytest.approx(0.539, abs=1e-15)


def test_sgd_hand_computed_weight_decay_and_dampening():
    # p = 2, g = 1, λ = 0.5 → d = 2 at step 1; v = d (undamped at step 1)
    # p = 2 − 0.1·2 = 1.8;  step 2: d = 1 + 0.9 = 1.9, v = 0.9·2 + 0.5·1.9 = 2.75
    # p = 1.8 − 0.275 = 1.525
    p, g = np.array([2.0]), np.array([1.0])
    opt = SGD([("p", p, g)], lr=0.1, momentum=0.9, weight_decay=0.5, dampening=0.5)
    opt.step()
    assert p[0] == pytest.approx(1.8, abs=1e-15)
    opt.step()
    assert p[0] == pytest.approx(1.525, abs=1e-15)
    assert g[0] == 1.0, "weight decay must not be written into the gradient"


CONFIGS = [
    dict(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0, dampening=0.0),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0, dampening=0.0),
    dict(lr=0.05, momentum=0.9, nesterov=False, weight_decay=1e-2, dampening=0.0),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=3e-4, dampening=0.0),
    dict(lr=0.05, momentum=0.8, nesterov=False, weight_decay=1e-2, dampening=0.3),
    dict(lr=0.2, momentum=0.0, nesterov=False, weight_decay=1e-2, dampening=0.0),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_reference(cfg):
    params, grads, backward, triples, coeffs = make_problem()
    keys = ("w", "b")
    sizes = [params[k].size for k in keys]
    p0 = np.concatenate([params[k].ravel() for k in keys])
    a = np.concatenate([coeffs[k][0].ravel() for k in keys])
    t = np.concatenate([coeffs[k][1].ravel() for k in keys])

    def grad_fn(p):
        return [a[i] * (p[i] - t[i]) for i in range(len(p))]

    n_steps = 5
    expected = reference_sgd(p0, grad_fn, n_steps, **cfg)

    opt = SGD(triples, **cfg)
    for _ in range(n_steps):
        backward()
        opt.step()
    got = np.concatenate([params[k].ravel() for k in keys])
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-14)
    assert opt.step_count == n_steps
    assert sizes == [params[k].size for k in keys]


def test_sgd_updates_in_place_and_reads_grads_by_reference():
    params, grads, backward, triples, _ = make_problem()
    w_before = params["w"].copy()
    opt = SGD(triples, lr=0.1, momentum=0.0)
    grads["w"][...] = 1.0  # written after construction: must still be seen
    grads["b"][...] = 0.0
    opt.step()
    assert triples[0][1] is params["w"]
    np.testing.assert_array_equal(params["w"], w_before - 0.1)


def test_no_weight_decay_exempts_named_parameters():
    params, grads, backward, triples, _ = make_problem()
    w0, b0 = params["w"].copy(), params["b"].copy()
    opt = SGD(triples, lr=0.1, momentum=0.0, weight_decay=0.5, no_weight_decay={"b"})
    opt.zero_grad()
    opt.step()
    np.testing.assert_array_equal(params["b"], b0)  # zero grad, no decay
    np.testing.assert_allclose(params["w"], w0 - 0.1 * 0.5 * w0, rtol=1e-15)


def test_zero_grad_fills_gradients_in_place():
    params, grads, backward, triples, _ = make_problem()
    backward()
    g_w = grads["w"]
    assert np.any(g_w != 0)
    SGD(triples).zero_grad()
    assert grads["w"] is g_w
    assert not np.any(grads["w"]) and not np.any(grads["b"])


def test_sgd_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    shapes = {"conv.weight": (4, 3, 3, 3), "bn.bias": (4,), "fc.weight": (10, 4)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = {k: np.zeros(s) for k, s in shapes.items()}
    t_params = [torch.tensor(params[k].copy(), dtype=torch.float64, requires_grad=True) for k in shapes]
    opt = SGD([(k, params[k], grads[k]) for k in shapes],
              lr=0.1, momentum=0.9, nesterov=True, weight_decay=3e-4)
    t_opt = torch.optim.SGD(t_params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=3e-4)
    for step in range(6):
        if step == 3:  # a schedule changes the learning rate mid-run
            opt.lr = 0.01
            for group in t_opt.param_groups:
                group["lr"] = 0.01
        for (k, tp) in zip(shapes, t_params):
            g = rng.standard_normal(shapes[k])
            grads[k][...] = g
            tp.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        t_opt.step()
    for k, tp in zip(shapes, t_params):
        np.testing.assert_allclose(params[k], tp.detach().numpy(), rtol=0, atol=1e-12)


def test_sgd_minimises_quadratic():
    params, grads, backward, triples, coeffs = make_problem()
    opt = SGD(triples, lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(300):
        backward()
        opt.step()
    for k in params:
        np.testing.assert_allclose(params[k], coeffs[k][1], atol=1e-8)


def test_float32_stays_float32_and_computes_in_float32():
    params, grads, backward, triples, coeffs = make_problem(np.float32, seed=3)
    # big enough that computing in float64 and rounding back would differ
    # from float32 arithmetic somewhere
    rng = np.random.default_rng(3)
    big = rng.standard_normal((64, 64)).astype(np.float32)
    big_g = np.zeros_like(big)
    triples = triples + [("big", big, big_g)]
    ref = {name: p.copy() for name, p, _ in triples}
    ref_v = {}
    f = np.float32
    lr, mu, wd = f(0.1), f(0.9), f(3e-4)
    opt = SGD(triples, lr=np.float64(0.1), momentum=0.9, nesterov=True, weight_decay=3e-4)
    for step in range(4):
        backward()
        big_g[...] = rng.standard_normal(big.shape).astype(np.float32)
        opt.step()
        # reference with float32 scalars, element-wise ops rounded like ufuncs
        for name, _, g in triples:
            d = g + wd * ref[name]
            ref_v[name] = d.copy() if step == 0 else mu * ref_v[name] + d
            ref[name] = ref[name] - lr * (d + mu * ref_v[name])
    for name, p, g in triples:
        assert p.dtype == np.float32 and g.dtype == np.float32
        assert opt.state_dict()[f"momentum.{name}"].dtype == np.float32
        np.testing.assert_array_equal(p, ref[name])


# ------------------------------------------------------------- state dict
def _run(opt, backward, n, lrs):
    for i in range(n):
        opt.lr = lrs[i]
        backward()
        opt.step()


@pytest.mark.parametrize("nesterov", [False, True])
def test_state_dict_round_trip_continues_bit_identically(tmp_path, nesterov):
    kw = dict(lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=3e-4)
    lrs = [0.1, 0.1, 0.05, 0.05, 0.01, 0.01, 0.005]

    # uninterrupted run
    params_a, _, backward_a, triples_a, _ = make_problem(np.float32, seed=11)
    opt_a = SGD(triples_a, **kw)
    _run(opt_a, backward_a, 7, lrs)

    # interrupted after 3 steps, saved, reloaded into a fresh optimiser
    params_b, _, backward_b, triples_b, _ = make_problem(np.float32, seed=11)
    opt_b = SGD(triples_b, **kw)
    _run(opt_b, backward_b, 3, lrs)
    path = tmp_path / "opt.npz"
    np.savez(path, **opt_b.state_dict())
    saved_params = {k: v.copy() for k, v in params_b.items()}

    params_c, _, backward_c, triples_c, _ = make_problem(np.float32, seed=11)
    for k in params_c:
        params_c[k][...] = saved_params[k]
    opt_c = SGD(triples_c, lr=0.5, **{k: v for k, v in kw.items() if k != "lr"})
    with np.load(path, allow_pickle=False) as data:
        opt_c.load_state_dict(data)
    assert opt_c.lr == lrs[2] and opt_c.step_count == 3
    _run(opt_c, backward_c, 4, lrs[3:])

    for k in params_a:
        np.testing.assert_array_equal(params_c[k], params_a[k])
    sd_a, sd_c = opt_a.state_dict(), opt_c.state_dict()
    assert sd_a.keys() == sd_c.keys()
    for k in sd_a:
        np.testing.assert_array_equal(sd_a[k], sd_c[k])


def test_state_dict_holds_plain_array_copies():
    params, grads, backward, triples, _ = make_problem()
    opt = SGD(triples, lr=0.1, momentum=0.9)
    assert set(opt.state_dict()) == {"lr", "step_count", "config.momentum", "config.dampening",
                                     "config.weight_decay", "config.nesterov"}
    backward()
    opt.step()
    sd = opt.state_dict()
    assert {"momentum.w", "momentum.b"} <= set(sd)
    for k, v in sd.items():
        assert isinstance(v, np.ndarray) and v.dtype != object, k
    assert sd["lr"].shape == () and sd["step_count"][()] == 1
    before = sd["momentum.w"].copy()
    backward()
    opt.step()
    np.testing.assert_array_equal(sd["momentum.w"], before)  # a copy, not the live buffer


def test_load_state_dict_before_first_step():
    _, _, backward, triples, _ = make_problem()
    sd = SGD(triples, lr=0.3).state_dict()
    opt = SGD(triples, lr=0.1)
    opt.load_state_dict(sd)
    assert opt.lr == 0.3 and opt.step_count == 0


def _stepped_state():
    params, grads, backward, triples, _ = make_problem()
    opt = SGD(triples, lr=0.1, momentum=0.9)
    backward()
    opt.step()
    return opt, opt.state_dict()


def test_load_state_dict_missing_buffer_names_key():
    opt, sd = _stepped_state()
    del sd["momentum.w"]
    with pytest.raises(KeyError, match="momentum.w"):
        opt.load_state_dict(sd)


def test_load_state_dict_missing_lr_names_key():
    opt, sd = _stepped_state()
    del sd["lr"]
    with pytest.raises(KeyError, match="'lr'"):
        opt.load_state_dict(sd)


def test_load_state_dict_shape_mismatch_names_key_and_shapes():
    opt, sd = _stepped_state()
    sd["momentum.w"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"momentum\.w.*\(3, 2\).*\(2, 3\)"):
        opt.load_state_dict(sd)


def test_load_state_dict_dtype_mismatch():
    opt, sd = _stepped_state()
    sd["momentum.w"] = sd["momentum.w"].astype(np.float32)
    with pytest.raises(TypeError, match=r"momentum\.w.*float64.*float32"):
        opt.load_state_dict(sd)


def test_load_state_dict_unexpected_key():
    opt, sd = _stepped_state()
    sd["momentum.nope"] = np.zeros(3)
    with pytest.raises(KeyError, match="momentum.nope"):
        opt.load_state_dict(sd)


def test_load_state_dict_config_mismatch_leaves_optimiser_unchanged():
    opt, sd = _stepped_state()
    _, _, _, triples, _ = make_problem()
    other = SGD(triples, lr=0.7, momentum=0.5)
    with pytest.raises(ValueError, match="config.momentum"):
        other.load_state_dict(sd)
    assert other.lr == 0.7 and other.step_count == 0


# ------------------------------------------------------- SGD bad arguments
def _triples():
    return make_problem()[3]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-0.1), "'lr'.*>= 0.*-0.1"),
        (dict(lr=float("nan")), "'lr'.*finite"),
        (dict(lr="0.1"), "'lr'.*real number"),
        (dict(momentum=1.0), "'momentum'.*< 1.0.*1.0"),
        (dict(momentum=-0.5), "'momentum'.*>= 0.*-0.5"),
        (dict(weight_decay=-1e-4), "'weight_decay'.*>= 0.*-0.0001"),
        (dict(dampening=1.5), "'dampening'.*<= 1.0.*1.5"),
        (dict(nesterov=True, momentum=0.0), "'nesterov'.*momentum > 0"),
        (dict(nesterov=True, dampening=0.1), "'nesterov'.*dampening == 0"),
        (dict(nesterov="yes"), "'nesterov'.*True or False"),
        (dict(no_weight_decay={"w", "bias"}), "'no_weight_decay'.*bias"),
    ],
)
def test_sgd_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SGD(_triples(), **kwargs)


def test_sgd_bad_params():
    p = np.zeros(3)
    with pytest.raises(ValueError, match="'params'.*empty"):
        SGD([])
    with pytest.raises(TypeError, match="'params'.*triple"):
        SGD([("p", p)])
    with pytest.raises(ValueError, match=r"'params'\[0\].*\(3,\).*\(4,\)"):
        SGD([("p", p, np.zeros(4))])
    with pytest.raises(ValueError, match=r"'params'\[0\].*float64.*float32"):
        SGD([("p", p, np.zeros(3, np.float32))])
    with pytest.raises(TypeError, match=r"'params'\[0\].*int64"):
        SGD([("p", np.zeros(3, np.int64), np.zeros(3, np.int64))])
    with pytest.raises(ValueError, match=r"'params'\[1\].*unique.*'p'"):
        SGD([("p", p, np.zeros(3)), ("p", np.zeros(3), np.zeros(3))])
    with pytest.raises(ValueError, match=r"'params'\[1\].*same param array.*'p'"):
        SGD([("p", p, np.zeros(3)), ("q", p, np.zeros(3))])


def test_lr_setter_validates():
    opt = SGD(_triples())
    opt.lr = 0.02
    assert opt.lr == 0.02
    with pytest.raises(ValueError, match="'lr'.*-1"):
        opt.lr = -1
    assert opt.lr == 0.02


# --------------------------------------------------------------- schedules
def test_paper_schedule_values():
    s = paper_schedule()
    epochs = [0, 79, 80, 119, 120, 159, 160, 199]
    expected = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0005, 0.0005]
    assert [s.lr_at(e) for e in epochs] == pytest.approx(expected, rel=1e-12)
    assert s.milestones == (80, 120, 160) and s.gammas == (0.1, 0.1, 0.5)


def test_multistep_fractional_epochs_and_single_gamma():
    s = MultiStepLR(1.0, [2, 4], 0.5)
    assert s.lr_at(1.999) == 1.0
    assert s.lr_at(2.0) == 0.5
    assert s.lr_at(3.5) == 0.5
    assert s.lr_at(4) == 0.25
    assert paper_schedule(0.2).lr_at(85.5) == pytest.approx(0.02, rel=1e-12)


def test_cosine_endpoints_and_midpoint():
    s = CosineLR(0.1, 200, min_lr=0.001)
    assert s.lr_at(0) == pytest.approx(0.1, rel=1e-12)
    assert s.lr_at(100) == pytest.approx(0.0505, rel=1e-12)
    assert s.lr_at(200) == pytest.approx(0.001, rel=1e-12)
    assert s.lr_at(250) == pytest.approx(0.001, rel=1e-12)
    assert s.lr_at(50) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi / 4)) / 2, rel=1e-12)
    assert CosineLR(1.0, 10).lr_at(10) == pytest.approx(0.0, abs=1e-15)


def test_linear_warmup_ramp():
    s = LinearWarmup(ConstantLR(0.1), warmup_epochs=5)
    assert [s.lr_at(e) for e in (0, 1, 2.5, 5, 6)] == pytest.approx([0.0, 0.02, 0.05, 0.1, 0.1], abs=1e-15)
    s = LinearWarmup(paper_schedule(), warmup_epochs=4, start_factor=0.5)
    assert s.lr_at(0) == pytest.approx(0.05)
    assert s.lr_at(2) == pytest.approx(0.075)
    assert s.lr_at(4) == pytest.approx(0.1)
    assert s.lr_at(80) == pytest.approx(0.01)


def test_constant_lr():
    assert ConstantLR(0.03).lr_at(0) == 0.03
    assert ConstantLR(0.03).lr_at(1e6) == 0.03


@pytest.mark.parametrize(
    "schedule",
    [
        paper_schedule(),
        CosineLR(0.1, 200, min_lr=1e-4),
        LinearWarmup(CosineLR(0.1, 30), 2.5, start_factor=0.1),
        ConstantLR(0.5),
    ],
    ids=lambda s: type(s).__name__,
)
def test_schedule_repr_rebuilds_schedule(schedule):
    ns = dict(MultiStepLR=MultiStepLR, CosineLR=CosineLR, LinearWarmup=LinearWarmup, ConstantLR=ConstantLR)
    rebuilt = eval(repr(schedule), ns)
    epochs = [0, 1.5, 2.5, 10, 80, 125, 170, 300]
    assert [rebuilt.lr_at(e) for e in epochs] == [schedule.lr_at(e) for e in epochs]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MultiStepLR(0.1, (120, 80), (0.1, 0.1)), "'milestones'.*increasing"),
        (lambda: MultiStepLR(0.1, (80, 80), 0.1), "'milestones'.*increasing"),
        (lambda: MultiStepLR(0.1, (0, 80), 0.1), "'milestones'.*> 0"),
        (lambda: MultiStepLR(0.1, (80, 120), (0.1,)), "'gammas'.*one factor per milestone.*2.*1"),
        (lambda: MultiStepLR(0.1, (80,), (-0.1,)), "'gammas'.*> 0"),
        (lambda: MultiStepLR(-0.1, (80,), 0.1), "'base_lr'.*>= 0"),
        (lambda: MultiStepLR(0.1, 80, 0.1), "'milestones'.*sequence"),
        (lambda: CosineLR(0.1, 0), "'total_epochs'.*> 0"),
        (lambda: CosineLR(0.1, 10, min_lr=0.2), "'min_lr'.*<= 0.1"),
        (lambda: LinearWarmup(ConstantLR(0.1), 0), "'warmup_epochs'.*> 0"),
        (lambda: LinearWarmup(ConstantLR(0.1), 5, start_factor=1.5), "'start_factor'.*<= 1"),
        (lambda: LinearWarmup(0.1, 5), "'schedule'.*LRSchedule.*float"),
        (lambda: ConstantLR(-1.0), "'lr'.*>= 0"),
        (lambda: paper_schedule().lr_at(-1), "'epoch'.*>= 0"),
        (lambda: paper_schedule().lr_at(float("inf")), "'epoch'.*finite"),
    ],
)
def test_schedule_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_lr_multipliers_scale_one_parameters_step():
    a, b = np.ones(3), np.ones(3)
    ga, gb = np.full(3, 2.0), np.full(3, 2.0)
    opt = SGD([("a", a, ga), ("b", b, gb)], lr=0.1, momentum=0.0, lr_multipliers={"b": 0.01})
    opt.step()
    np.testing.assert_allclose(a, 1 - 0.1 * 2)
    np.testing.assert_allclose(b, 1 - 0.001 * 2)
    with pytest.raises(ValueError, match="lr_multipliers': expected names of parameters"):
        SGD([("a", a, ga)], lr_multipliers={"c": 0.5})
    with pytest.raises(ValueError, match=r"lr_multipliers\['a'\]"):
        SGD([("a", a, ga)], lr_multipliers={"a": -1.0})


# ---------------------------------------------------------------------------
# the one-pass Numba update against its NumPy twin
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, dampening, nesterov", [(0.9, 0.0, True), (0.9, 0.0, False),
                                                           (0.9, 0.3, False), (0.0, 0.0, False)])
@pytest.mark.parametrize("weight_decay", [0.0, 3e-4])
def test_sgd_kernel_equals_numpy_twin_bit_for_bit(dtype, momentum, dampening, nesterov, weight_decay):
    from tqref.kernels.sgd import sgd_update
    from tqref.optim import sgd_update as sgd_update_naive

    rng = np.random.default_rng(7)
    t = np.dtype(dtype).type
    p0 = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    p_fast, p_ref = p0.copy(), p0.copy()
    v_fast, v_ref = np.zeros_like(p0), np.zeros_like(p0)
    for step in range(3):
        g = rng.standard_normal(p0.shape).astype(dtype)
        args = (t(0.1), t(momentum), t(1.0 - dampening), t(weight_decay), nesterov, step == 0)
        sgd_update(p_fast, g, v_fast, *args)
        sgd_update_naive(p_ref, g, v_ref, *args)
        np.testing.assert_array_equal(p_fast, p_ref)
        np.testing.assert_array_equal(v_fast, v_ref)
    assert p_fast.dtype == dtype and not np.array_equal(p_fast, p0)
