"""Numeric gradient checks: the way to trust a hand-written backward pass.

A backward pass computes ∂L/∂x analytically.  We check it against the
definition of the derivative, with central differences in float64:

    ∂L/∂x_i ≈ (L(x + h·e_i) − L(x − h·e_i)) / (2h)          (error O(h²))

For an operation ``y = f(x)`` with an upstream gradient ``dout`` we take the
scalar ``L(x) = Σ f(x) · dout``, whose gradient is exactly what
``op_backward(dout, cache)`` must return.

Checking every element costs two forward passes per element.  For large
tensors (a whole ResNet) we check along random directions ``u`` instead:

    ⟨∇L(x), u⟩ ≈ (L(x + h·u) − L(x − h·u)) / (2h)

which needs two forward passes per direction and still catches any wrong
component with probability one.

Functions
---------
numeric_gradient(f, x, dout=None, h=1e-6)       -> array like x
relative_error(analytic, numeric)               -> float
directional_derivative(f, x, u, dout=None, h)   -> float
check_gradient(f, x, analytic, dout=None, ...)  -> float (raises if too large)
check_directions(f, x, analytic, dout=None, ...)-> list of floats (raises if too large)
check_module_gradients(module, x, dout=None, ...) -> list of floats (whole networks)
"""

import numpy as np


def _require_float64(x, who):
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        found = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(
            f"{who}: numeric gradients need a float64 array (float32 rounding "
            f"swamps central differences); got {found}"
        )


def _scalar_loss(f, dout):
    """Turn an array-valued ``f`` into the scalar L = Σ f(x)·dout."""
    if dout is None:
        return lambda: float(np.sum(f()))
    return lambda: float(np.sum(np.asarray(f(), dtype=np.float64) * dout))


def numeric_gradient(f, x, dout=None, h=1e-6):
    """Central-difference gradient of ``L = Σ f() · dout`` with respect to ``x``.

    f:    a function of no arguments that reads ``x`` (changed in place here
          and restored afterwards) and returns an array or a scalar
    x:    float64 array, any shape
    dout: upstream gradient, same shape as ``f()``; None means all ones
    h:    step; 1e-6 balances truncation O(h²) against rounding O(ε/h) in float64

    Returns an array shaped like ``x``.
    """
    _require_float64(x, "numeric_gradient: x")
    loss = _scalar_loss(f, dout)
    grad = np.zeros_like(x)
    flat_x = x.reshape(-1)  # a view: writing into it moves x
    flat_g = grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + h
        plus = loss()
        flat_x[i] = old - h
        minus = loss()
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2 * h)
    return grad


def relative_error(analytic, numeric, eps=1e-12):
    """max |a − n| / max(|a| + |n|, eps), taken over all elements.

    Scale-free, so the same bound works for tiny and huge gradients; the
    ``eps`` floor keeps a pair of (near-)zero gradients from dividing 0 by 0.
    A correct float64 backward gives about 1e-8 or less; a wrong one 1e-2 or more.
    """
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"relative_error: shapes differ, analytic {a.shape} vs numeric {n.shape}")
    if a.size == 0:
        return 0.0
    num = np.abs(a - n)
    den = np.maximum(np.abs(a) + np.abs(n), eps)
    return float(np.max(num / den))


def directional_derivative(f, x, u, dout=None, h=1e-6):
    """Central difference of ``L = Σ f() · dout`` along direction ``u``:
    (L(x + h·u) − L(x − h·u)) / (2h).  ``x`` is restored afterwards."""
    _require_float64(x, "directional_derivative: x")
    loss = _scalar_loss(f, dout)
    saved = x.copy()
    x += h * u
    plus = loss()
    x[...] = saved - h * u
    minus = loss()
    x[...] = saved
    return (plus - minus) / (2 * h)


def check_gradient(f, x, analytic, dout=None, h=1e-6, tol=1e-6, name="x"):
    """Compare an analytic gradient with the numeric one, element by element.

    Raises AssertionError naming ``name`` when the relative error exceeds
    ``tol``; returns the relative error otherwise.
    """
    numeric = numeric_gradient(f, x, dout, h)
    err = relative_error(analytic, numeric)
    if not err <= tol:
        worst = np.unravel_index(
            np.argmax(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-12)),
            x.shape,
        )
        raise AssertionError(
            f"gradient of {name}: relative error {err:.3e} > {tol:.0e}; worst at index {worst}: "
            f"analytic {analytic[worst]:.6e}, numeric {numeric[worst]:.6e}"
        )
    return err


def check_directions(f, x, analytic, dout=None, n_directions=5, rng=None, h=1e-6, tol=1e-6, name="x"):
    """Check ⟨analytic, u⟩ against the numeric directional derivative for
    ``n_directions`` random unit directions ``u``.

    Meant for tensors too big to check element by element (a whole network's
    weights).  Returns the list of relative errors; raises AssertionError
    naming ``name`` if one exceeds ``tol``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    errors = []
    for _ in range(n_directions):
        u = rng.standard_normal(x.shape)
        u /= np.linalg.norm(u)
        numeric = directional_derivative(f, x, u, dout, h)
        predicted = float(np.sum(analytic * u))
        err = abs(predicted - numeric) / max(abs(predicted) + abs(numeric), 1e-12)
        errors.append(err)
        if not err <= tol:
            raise AssertionError(
                f"gradient of {name} along a random direction: relative error {err:.3e} > {tol:.0e} "
                f"(analytic {predicted:.8e}, numeric {numeric:.8e})"
            )
    return errors


def check_module_gradients(module, x, dout=None, n_directions=3, rng=None, h=1e-6, tol=1e-6):
    """Directional check of a whole module's hand-written backward pass.

    All parameters *and* the input are moved together along a random
    direction u = (u_x, u_θ); the numeric directional derivative of
    L = Σ module.forward(x) · dout is compared with
    ⟨∂L/∂x, u_x⟩ + Σ_θ ⟨∂L/∂θ, u_θ⟩ from ``module.backward``.

    module: a tqref Module in float64 (``module.astype(np.float64)``)
    x:      float64 input batch
    dout:   upstream gradient (random if None)

    Returns the list of relative errors; raises AssertionError above ``tol``.
    Running statistics of BN layers in training mode change during the
    check; outputs in training mode do not depend on them.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    _require_float64(x, "check_module_gradients: x")
    params = [p for _, p in module.named_parameters()]
    for name, p in module.named_parameters():
        _require_float64(p, f"check_module_gradients: parameter '{name}'")
    out = module.forward(x)
    if dout is None:
        dout = rng.standard_normal(out.shape)
    dx = module.backward(dout)
    grads = [g.copy() for _, g in module.named_gradients()]
    tensors, analytic = [x] + params, [dx] + grads

    def loss():
        return float(np.sum(module.forward(x) * dout))

    errors = []
    for _ in range(n_directions):
        directions = [rng.standard_normal(t.shape) for t in tensors]
        norm = np.sqrt(sum(float(np.sum(u * u)) for u in directions))
        directions = [u / norm for u in directions]
        saved = [t.copy() for t in tensors]
        for t, u in zip(tensors, directions):
            t += h * u
        plus = loss()
        for t, s, u in zip(tensors, saved, directions):
            t[...] = s - h * u
        minus = loss()
        for t, s in zip(tensors, saved):
            t[...] = s
        numeric = (plus - minus) / (2 * h)
        predicted = sum(float(np.sum(g * u)) for g, u in zip(analytic, directions))
        err = abs(predicted - numeric) / max(abs(predicted) + abs(numeric), 1e-12)
        errors.append(err)
        if not err <= tol:
            raise AssertionError(
                f"{module.describe()}: directional gradient check failed: relative error "
                f"{err:.3e} > {tol:.0e} (analytic {predicted:.8e}, numeric {numeric:.8e})"
            )
    return errors
