"""L2-regularised multinomial logistic regression, fit to convergence: the linear probe's method.

The model, for features ``x`` (n × D, already standardised by the caller), labels ``y`` and
per-sample weights ``s`` that sum to one (uniform, or equal total weight per class)::

    f(W, b) = Σ_i s_i · CE(W x_i + b, y_i)  +  λ/2 · (‖W‖² + ‖b‖²)

is strictly convex for λ > 0, so it has one minimiser, whatever the starting point: a warm start
changes how fast it is found, never what is found.  The bias is penalised too (with the same λ),
so that a class without a labelled point gets a finite bias instead of one that runs to −∞.

:func:`logreg_reference` states the method in a few lines (scipy's L-BFGS-B over float64 numpy);
:func:`fit_logreg` is the engine the probe uses: L-BFGS in torch with the analytic gradient, whose
line search moves along the logits (``Z(α) = Z + α·X p``), so one step costs two products with
``x`` (``X p`` and ``Xᵀ G``) however many trial steps the line search takes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from alkit.checks import ParameterError

#: Gradient tolerance: stop when max |∇f| ≤ tol · max |∇f(0, 0)| (the gradient at the zero head,
#: so the test does not depend on the number of classes, the scale of the loss or a warm start).
#: At 1e-2 test accuracy on the cpu-scale rounds matched fits run to 1e-4 within 0.1 point
#: (benchmarks/full_data_probe.py checks the default against a tighter, wider-grid reference).
DEFAULT_TOL = 1e-2
DEFAULT_MAX_ITER = 500
HISTORY = 10   # L-BFGS memory (pairs of steps and gradient changes)


def sample_weights(labels: np.ndarray, num_classes: int, class_weighted: bool) -> np.ndarray:
    """``s`` summing to one: uniform, or (class_weighted) the same total for every labelled class."""
    labels = np.asarray(labels)
    if not class_weighted:
        return np.full(labels.size, 1.0 / labels.size)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = np.count_nonzero(counts)
    return 1.0 / (present * counts[labels])


# --------------------------------------------------------------------------------------------
# Reference: the objective and scipy's L-BFGS-B, float64
# --------------------------------------------------------------------------------------------

def objective_reference(x: np.ndarray, y: np.ndarray, weight: np.ndarray, bias: np.ndarray, l2: float,
                        s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """f and its gradient (∂f/∂W as (C, D), ∂f/∂b) in float64 numpy, straight from the formula."""
    z = x @ weight.T + bias
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = x.shape[0]
    loss = -(s * log_p[np.arange(n), y]).sum() + 0.5 * l2 * ((weight ** 2).sum() + (bias ** 2).sum())
    g = np.exp(log_p)
    g[np.arange(n), y] -= 1.0
    g *= s[:, None]
    return float(loss), g.T @ x + l2 * weight, g.sum(axis=0) + l2 * bias


def logreg_reference(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float,
                     s: np.ndarray | None = None, gtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """The minimiser (W, b) of f by scipy's L-BFGS-B in float64: the plain statement of the method."""
    x = np.asarray(x, np.float64)
    s = np.full(x.shape[0], 1.0 / x.shape[0]) if s is None else np.asarray(s, np.float64)
    d = x.shape[1]

    def fun(theta):
        w, b = theta[:num_classes * d].reshape(num_classes, d), theta[num_classes * d:]
        loss, gw, gb = objective_reference(x, y, w, b, l2, s)
        return loss, np.concatenate([gw.ravel(), gb])

    result = minimize(fun, np.zeros(num_classes * (d + 1)), jac=True, method="L-BFGS-B",
                      options={"maxiter": 20_000, "gtol": gtol, "ftol": 1e-15, "maxcor": 20})
    return result.x[:num_classes * d].reshape(num_classes, d), result.x[num_classes * d:]


# --------------------------------------------------------------------------------------------
# Engine: L-BFGS in torch along the logits
# --------------------------------------------------------------------------------------------

@dataclass
class LogRegFit:
    """The minimiser for one λ, in the coordinates it was fit in, with its record."""

    weight: torch.Tensor    # (D, C): logits = x @ weight + bias
    bias: torch.Tensor      # (C,)
    l2: float
    loss: float
    iterations: int
    evaluations: int        # products with x (two per iteration, plus the first gradient)
    converged: bool
    grad_max: float         # max |∇f| at the end
    grad_tol: float         # the threshold it had to reach
    checked_in: str = "float32"   # arithmetic of the last gradient test ("bfloat16" products, or float32)


def _weighted_ce(z: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Σ s_i CE(z_i, y_i) (float64) and G = s ⊙ (softmax(z) − onehot(y)) (∂/∂z)."""
    log_p = torch.log_softmax(z, dim=1)
    loss = -(s.double() * log_p.gather(1, y[:, None])[:, 0].double()).sum()
    g = log_p.exp_()
    g[torch.arange(z.shape[0], device=z.device), y] -= 1.0
    return float(loss), g.mul_(s[:, None])


class _Problem:
    """f along the logits: keeps Z = x W + b so that a trial step costs O(n·C), not a product.

    ``x_fast``, when given, is a bfloat16 copy of ``x`` used for the two products of an iteration
    (X p and Xᵀ G) while ``fast`` is on; Z, the loss, the gradient and W stay float32.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, l2: float,
                 x_fast: torch.Tensor | None = None):
        self.x, self.y, self.s, self.l2, self.x_fast = x, y, s, l2, x_fast
        self.fast = x_fast is not None

    def value_and_logit_grad(self, z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss, g = _weighted_ce(z, self.y, self.s)
        penalty = 0.5 * self.l2 * (float(torch.sum(w.double() ** 2)) + float(torch.sum(b.double() ** 2)))
        return loss + penalty, g

    def logits_change(self, pw: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
        """X p + p_b: the change of Z per unit step along p."""
        if self.fast:
            return torch.mm(self.x_fast, pw.to(torch.bfloat16)).float().add_(pb)
        return torch.addmm(pb, self.x, pw)

    def gradient(self, g: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fast:
            xtg = torch.mm(self.x_fast.T, g.to(torch.bfloat16)).float()
            return xtg.add_(w, alpha=self.l2), g.sum(0).add_(b, alpha=self.l2)
        return torch.addmm(w, self.x.T, g, alpha=1.0, beta=self.l2), g.sum(0).add_(b, alpha=self.l2)


def fast_products_available(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 products run natively here (oneDNN with AVX-512 BF16 / AMX on a CPU): where
    they do not, they are emulated and slower than float32, so :func:`fit_logreg` does not use them."""
    if torch.device(device).type != "cpu":
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _dot(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> float:
    return float(torch.sum(a[0] * b[0], dtype=torch.float64) + torch.sum(a[1] * b[1], dtype=torch.float64))


def _two_loop(grad, pairs, gamma):
    """−H·grad by the L-BFGS two-loop recursion over the stored (step, gradient change) pairs."""
    qw, qb = grad[0].neg(), grad[1].neg()
    alphas = []
    for s, yv, rho in reversed(pairs):
        a = rho * _dot(s, (qw, qb))
        alphas.append(a)
        qw.add_(yv[0], alpha=-a)
        qb.add_(yv[1], alpha=-a)
    qw.mul_(gamma)
    qb.mul_(gamma)
    for (s, yv, rho), a in zip(pairs, reversed(alphas)):
        beta = rho * _dot(yv, (qw, qb))
        qw.add_(s[0], alpha=a - beta)
        qb.add_(s[1], alpha=a - beta)
    return qw, qb


def _line_search(problem: _Problem, z, dz, w, b, pw, pb, f0, slope0, max_steps: int = 30):
    """A step α along p satisfying the strong Wolfe conditions (c1 = 1e-4, c2 = 0.9), by
    expansion and bisection/secant on the slope.  Every trial costs O(n·C): Z(α) = Z + α·dZ."""
    c1, c2 = 1e-4, 0.9
    pw_dot_w, pw_sq = _dot((pw, pb), (w, b)), _dot((pw, pb), (pw, pb))

    def trial(alpha):
        za = torch.add(z, dz, alpha=alpha)
        loss, g = _weighted_ce(za, problem.y, problem.s)
        wa_sq = float(torch.sum(w.double() ** 2) + torch.sum(b.double() ** 2)) + 2 * alpha * pw_dot_w + alpha ** 2 * pw_sq
        value = loss + 0.5 * problem.l2 * wa_sq
        slope = float(torch.dot(g.view(-1), dz.view(-1))) + problem.l2 * (pw_dot_w + alpha * pw_sq)
        return value, slope, za, g

    lo, hi = 0.0, None
    f_lo = f0
    alpha = 1.0
    best = None
    for _ in range(max_steps):
        value, slope, za, g = trial(alpha)
        if value > f0 + c1 * alpha * slope0 or (hi is None and best is not None and value >= f_lo):
            hi = alpha
        elif abs(slope) <= -c2 * slope0:
            return alpha, value, za, g
        elif slope > 0:
            hi = alpha
        else:
            lo, f_lo = alpha, value
            best = (alpha, value, za, g)
        alpha = 2.0 * alpha if hi is None else 0.5 * (lo + hi)
    if best is not None:   # sufficient decrease without the curvature condition: still a descent step
        return best
    return None


def fit_logreg(
    x: torch.Tensor,
    y: torch.Tensor,
    s: torch.Tensor,
    num_classes: int,
    l2: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    grad_scale: float | None = None,
    x_fast: torch.Tensor | None = None,
    finish_in_float32: bool = True,
) -> LogRegFit:
    """Minimise f for one λ by L-BFGS from ``init`` (W as (D, C), b), else from zero.

    Stops when max |∇f| ≤ ``tol · grad_scale`` (``grad_scale``: max |∇f| at the zero head, computed
    here when not given) or after ``max_iter`` iterations (then ``converged`` is False).

    ``x_fast`` (a bfloat16 copy of ``x``) speeds up the first phase: its iterations use bfloat16
    products until they meet the tolerance or stall; the fit then recomputes Z and the gradient in
    float32 and goes on in float32 until the float32 gradient meets the tolerance.  The answer is
    the float32 minimiser either way; the cheap products only get near it faster.  With
    ``finish_in_float32=False`` it stops once the bfloat16 gradient meets the tolerance
    (``checked_in="bfloat16"``): enough for a candidate that is only compared on validation.
    """
    if l2 <= 0:
        raise ParameterError(f"l2 must be > 0 (the strength of the L2 penalty), got {l2}", param="l2")
    problem = _Problem(x, y, s, float(l2), x_fast)
    dev = x.device
    evaluations = 0
    if grad_scale is None:
        grad_scale = zero_head_gradient(x, y, s, num_classes)
        evaluations += 1
    grad_tol = tol * grad_scale
    if init is None:
        w = torch.zeros(x.shape[1], num_classes, device=dev)
        b = torch.zeros(num_classes, device=dev)
        z = torch.zeros(x.shape[0], num_classes, device=dev)
    else:
        w = init[0].to(dev, torch.float32).clone()
        b = init[1].to(dev, torch.float32).clone()
        z = problem.logits_change(w, b)   # Z = X W + b (with the fast products in the fast phase)
        evaluations += 1
    f, g = problem.value_and_logit_grad(z, w, b)
    grad = problem.gradient(g, w, b)
    evaluations += 1
    pairs: list = []
    iterations = 0
    grad_max = _max_abs(grad)
    gamma = 1.0 / max(_dot(grad, grad) ** 0.5, 1e-12)   # first trial step: unit length along −∇f
    since_exact = 0
    while iterations < max_iter:
        if grad_max <= grad_tol and problem.fast and not finish_in_float32:
            break
        if grad_max <= grad_tol or since_exact == 25:
            if not problem.fast and grad_max <= grad_tol:
                break
            # Leave the fast phase (or refresh Z, updated by additions): Z, f and ∇f exactly, in float32.
            problem.fast = problem.fast and grad_max > grad_tol
            z = torch.addmm(b, x, w)
            f, g = problem.value_and_logit_grad(z, w, b)
            grad = problem.gradient(g, w, b)
            evaluations += 2
            grad_max, since_exact = _max_abs(grad), 0
            if grad_max <= grad_tol and not problem.fast:
                break
        pw, pb = _two_loop(grad, pairs, gamma)
        slope0 = _dot((pw, pb), grad)
        if slope0 >= 0:   # not a descent direction (lost curvature): restart from steepest descent
            pairs.clear()
            pw, pb = grad[0].neg(), grad[1].neg()
            slope0 = _dot((pw, pb), grad)
        dz = problem.logits_change(pw, pb)
        evaluations += 1
        step = _line_search(problem, z, dz, w, b, pw, pb, f, slope0)
        if step is None:
            if problem.fast:   # the cheap products cannot resolve this step: go on in float32
                problem.fast, since_exact = False, 25
                continue
            break
        alpha, f, z, g = step
        w_new, b_new = w.add(pw, alpha=alpha), b.add(pb, alpha=alpha)
        grad_new = problem.gradient(g, w_new, b_new)
        evaluations += 1
        sw, sb = w_new - w, b_new - b
        yw, yb = grad_new[0] - grad[0], grad_new[1] - grad[1]
        sy = _dot((sw, sb), (yw, yb))
        if sy > 1e-12 * _dot((yw, yb), (yw, yb)):
            pairs.append(((sw, sb), (yw, yb), 1.0 / sy))
            if len(pairs) > HISTORY:
                pairs.pop(0)
            gamma = sy / _dot((yw, yb), (yw, yb))
        w, b, grad = w_new, b_new, grad_new
        grad_max = _max_abs(grad)
        iterations += 1
        since_exact += 1
    checked_in = "float32"
    if problem.fast and not finish_in_float32:
        checked_in = "bfloat16"
    elif problem.fast:   # stopped by max_iter in the fast phase: report the exact gradient
        problem.fast = False
        z = torch.addmm(b, x, w)
        f, g = problem.value_and_logit_grad(z, w, b)
        grad_max = _max_abs(problem.gradient(g, w, b))
        evaluations += 2
    return LogRegFit(w, b, float(l2), float(f), iterations, evaluations, bool(grad_max <= grad_tol), grad_max,
                     grad_tol, checked_in)


def _max_abs(grad: tuple[torch.Tensor, torch.Tensor]) -> float:
    return max(float(grad[0].abs().max()), float(grad[1].abs().max()))


def zero_head_gradient(x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, num_classes: int) -> float:
    """max |∇f| at W = 0, b = 0 (the scale of the stopping test; the same for every λ)."""
    g = torch.full((x.shape[0], num_classes), 1.0 / num_classes, device=x.device)
    g[torch.arange(x.shape[0], device=x.device), y] -= 1.0
    g.mul_(s[:, None])
    return max(float((x.T @ g).abs().max()), float(g.sum(0).abs().max()))
