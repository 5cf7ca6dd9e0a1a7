"""The converged logistic-regression probe: formula, engine against the scipy reference, grid choice."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alkit.logreg import (fit_logreg, logreg_reference, objective_reference, sample_weights,
                          zero_head_gradient)
from alkit.data.synthetic import gaussian_mixture
from alkit.probe import PROBE_PRESETS, ProbeConfig, predict_logits, train_linear_probe


def _problem(n=240, d=12, c=4, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(c, d)) * 1.2
    y = rng.integers(0, c, n)
    x = means[y] + rng.normal(size=(n, d)) + shift
    return x, y


def _t(a, dtype=torch.float32):
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def test_objective_on_a_hand_made_case():
    # Two points, two classes, one feature; W = [[1], [-1]], b = 0, λ = 0.5, uniform s = 1/2.
    # Logits: x=+1 → (1, −1), x=−1 → (−1, 1); labels (0, 0): CEs log(1+e^{-2}) and log(1+e^{2}).
    x, y = np.array([[1.0], [-1.0]]), np.array([0, 0])
    w, b, s = np.array([[1.0], [-1.0]]), np.zeros(2), np.array([0.5, 0.5])
    loss, gw, gb = objective_reference(x, y, w, b, 0.5, s)
    expected = 0.5 * (np.log1p(np.exp(-2)) + np.log1p(np.exp(2))) + 0.25 * 2
    assert loss == pytest.approx(expected, rel=1e-12)
    # ∂/∂W_0 = Σ s_i (p_i0 − 1) x_i + λ W_0, with p_10 = σ(2), p_20 = σ(−2).
    sig = 1 / (1 + np.exp(-2.0))
    assert gw[0, 0] == pytest.approx(0.5 * ((sig - 1) * 1 + ((1 - sig) - 1) * -1) + 0.5, rel=1e-12)
    assert gb.sum() == pytest.approx(0.0, abs=1e-12)   # softmax rows sum to one: Σ_c ∂/∂b_c = 0 at b = 0


def test_objective_gradient_matches_finite_differences():
    x, y = _problem(n=30, d=4, c=3)
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    s = sample_weights(y, 3, class_weighted=True)
    _, gw, gb = objective_reference(x, y, w, b, 0.3, s)
    eps = 1e-6
    for (i, j) in [(0, 0), (2, 3), (1, 2)]:
        wp, wm = w.copy(), w.copy()
        wp[i, j] += eps
        wm[i, j] -= eps
        numeric = (objective_reference(x, y, wp, b, 0.3, s)[0] - objective_reference(x, y, wm, b, 0.3, s)[0]) / (2 * eps)
        assert gw[i, j] == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    bp = b.copy()
    bp[1] += eps
    bm = b.copy()
    bm[1] -= eps
    numeric = (objective_reference(x, y, w, bp, 0.3, s)[0] - objective_reference(x, y, w, bm, 0.3, s)[0]) / (2 * eps)
    assert gb[1] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_sample_weights_give_every_labelled_class_the_same_total():
    y = np.array([0, 0, 0, 1, 2, 2])
    s = sample_weights(y, 4, class_weighted=True)
    assert s.sum() == pytest.approx(1.0)
    np.testing.assert_allclose([s[y == c].sum() for c in range(3)], [1 / 3] * 3)
    np.testing.assert_allclose(sample_weights(y, 4, class_weighted=False), np.full(6, 1 / 6))


@pytest.mark.parametrize("l2", [1.0, 0.1, 0.01])
@pytest.mark.parametrize("class_weighted", [False, True])
def test_engine_finds_the_reference_minimiser(l2, class_weighted):
    x, y = _problem(seed=3)
    y[:120] = 0   # imbalanced, so class weighting matters
    s = sample_weights(y, 4, class_weighted)
    w_ref, b_ref = logreg_reference(x, y, 4, l2, s)
    f_ref = objective_reference(x, y, w_ref, b_ref, l2, s)[0]
    fit = fit_logreg(_t(x), _t(y, torch.int64), _t(s), 4, l2, tol=1e-4)   # about float32's floor
    assert fit.converged
    w, b = fit.weight.T.double().numpy(), fit.bias.double().numpy()
    f = objective_reference(x, y, w, b, l2, s)[0]
    assert f == pytest.approx(f_ref, rel=1e-6)
    # Strong convexity (modulus λ): ‖θ − θ*‖² ≤ 2 (f − f*) / λ, so the weights are close as well.
    assert np.linalg.norm(np.concatenate([(w - w_ref).ravel(), b - b_ref])) <= np.sqrt(2 * max(f - f_ref, 1e-12) / l2) + 1e-3


def test_engine_stops_at_the_stated_gradient_tolerance():
    x, y = _problem(seed=4)
    s = sample_weights(y, 4, False)
    xt, yt, st = _t(x), _t(y, torch.int64), _t(s)
    scale = zero_head_gradient(xt, yt, st, 4)
    # The zero head's gradient, by hand: Σ_i s_i (1/C − onehot) x_i.
    g0 = np.full((y.size, 4), 0.25)
    g0[np.arange(y.size), y] -= 1
    g0 *= s[:, None]
    assert scale == pytest.approx(max(np.abs(g0.T @ x).max(), np.abs(g0.sum(0)).max()), rel=1e-5)
    for tol in (1e-1, 1e-3):
        fit = fit_logreg(xt, yt, st, 4, 0.05, tol=tol)
        _, gw, gb = objective_reference(x, y, fit.weight.T.double().numpy(), fit.bias.double().numpy(), 0.05, s)
        assert fit.converged and max(np.abs(gw).max(), np.abs(gb).max()) <= tol * scale * 1.01
    capped = fit_logreg(xt, yt, st, 4, 1e-4, tol=1e-6, max_iter=3)
    assert not capped.converged and capped.iterations == 3


def test_warm_start_and_fast_products_change_the_speed_not_the_answer():
    x, y = _problem(seed=5, n=400, d=20, c=5)
    s = sample_weights(y, 5, False)
    xt, yt, st = _t(x), _t(y, torch.int64), _t(s)
    cold = fit_logreg(xt, yt, st, 5, 0.02, tol=1e-4)
    far = (torch.randn(20, 5) * 3, torch.randn(5) * 3)
    warm = fit_logreg(xt, yt, st, 5, 0.02, init=far, tol=1e-4)
    fast = fit_logreg(xt, yt, st, 5, 0.02, tol=1e-4, x_fast=xt.to(torch.bfloat16))
    for other in (warm, fast):
        assert other.converged
        assert other.loss == pytest.approx(cold.loss, rel=1e-5)
        np.testing.assert_allclose(other.weight.numpy(), cold.weight.numpy(), atol=2e-3)
    near = fit_logreg(xt, yt, st, 5, 0.02, init=(cold.weight, cold.bias), tol=1e-4)
    assert near.iterations <= 1


def test_class_without_labels_gets_a_finite_low_bias():
    x, y = _problem(seed=6)
    y[y == 3] = 0   # class 3 never labelled
    fit = fit_logreg(_t(x), _t(y, torch.int64), _t(sample_weights(y, 4, False)), 4, 0.01)
    assert fit.converged and torch.isfinite(fit.bias).all()
    assert fit.bias[3] < fit.bias[:3].min()


def test_fit_rejects_a_non_positive_strength():
    with pytest.raises(ValueError, match="l2"):
        fit_logreg(torch.zeros(3, 2), torch.tensor([0, 1, 0]), torch.full((3,), 1 / 3), 2, 0.0)


# --------------------------------------------------------------------------------------------
# The probe: standardisation, the grid, validation, warm starts, records
# --------------------------------------------------------------------------------------------

def _split(seed=2, classes=6, dim=16, sep=1.6):
    data = gaussian_mixture(classes, 60, dim, separation=sep, seed=seed, n_test_per_class=40)
    x = data.train_features * 5 + 2   # far from standardised: the probe must fold μ, σ back
    xv = data.test_features * 5 + 2
    return x.astype(np.float32), data.train_labels, xv.astype(np.float32), data.test_labels, classes


def test_probe_is_the_reference_fit_on_standardised_features_folded_to_raw():
    x, y, xv, yv, c = _split()
    config = ProbeConfig(l2_grid=(0.05,), tol=1e-5, fast_products="off")
    head = train_linear_probe(x, y, xv, yv, c, config)
    mean, std = x.mean(0), x.std(0)
    w_ref, b_ref = logreg_reference((x - mean) / std, y, c, 0.05)
    expected = ((xv - mean) / std) @ w_ref.T + b_ref
    np.testing.assert_allclose(predict_logits(xv, head.weight, head.bias), expected, atol=2e-3)
    assert head.method == "logreg" and head.l2 == 0.05 and head.converged


def test_probe_keeps_the_strength_with_the_best_validation_accuracy():
    x, y, xv, yv, c = _split(seed=7, sep=1.0)
    grid = (3.0, 0.3, 0.03, 0.003)
    head = train_linear_probe(x, y, xv, yv, c, ProbeConfig(l2_grid=grid, grid_search="full", tol=1e-4))
    # The choice by hand from the recorded scores: best validation top-1, ties to the lower loss.
    records = head.grid
    assert [g["l2"] for g in records] == list(grid)
    best = max(range(len(grid)), key=lambda k: (records[k]["val_top1"], -records[k]["val_loss"]))
    assert head.l2 == grid[best] and head.best_val_accuracy == records[best]["val_top1"]
    # Each record is that strength's own fit (fit alone from zero: the same minimiser, so the same
    # validation scores up to the tolerance — at most one validation point apart).
    alone = [train_linear_probe(x, y, xv, yv, c, ProbeConfig(l2_grid=(v,), tol=1e-4)) for v in grid]
    np.testing.assert_allclose([g["val_top1"] for g in records], [h.best_val_accuracy for h in alone],
                               atol=1.01 / yv.size)
    np.testing.assert_allclose([g["val_loss"] for g in records], [h.val_loss for h in alone], rtol=1e-3)
    acc = (predict_logits(xv, head.weight, head.bias).argmax(1) == yv).mean()
    assert acc == pytest.approx(head.best_val_accuracy)


def test_local_search_walks_from_the_previous_choice_to_a_local_best():
    x, y, xv, yv, c = _split(seed=8, sep=1.0)
    grid = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
    config = ProbeConfig(l2_grid=grid, grid_search="local")
    # No previous head (round 0): every strength of the grid.
    first = train_linear_probe(x, y, xv, yv, c, config)
    assert [g["l2"] for g in first.grid] == list(grid)
    key = [(g["val_top1"], -g["val_loss"]) for g in first.grid]
    assert first.l2 == grid[int(max(range(len(grid)), key=lambda k: key[k]))]
    for start in (grid[0], grid[-1], first.l2):
        previous = train_linear_probe(x, y, xv, yv, c, ProbeConfig(l2_grid=(start,)))
        head = train_linear_probe(x, y, xv, yv, c, config, warm_start=previous)
        visited = [grid.index(g["l2"]) for g in head.grid]
        k0, chosen = grid.index(start), grid.index(head.l2)
        assert visited == list(range(min(visited), max(visited) + 1)) and k0 in visited   # a contiguous walk
        score = {grid.index(g["l2"]): (g["val_top1"], -g["val_loss"]) for g in head.grid}
        assert score[chosen] == max(score.values())
        # A local best: both grid neighbours of the choice were fitted (where they exist) and are not
        # better; the walk went no further than one step past the choice on either side.
        for neighbour in (chosen - 1, chosen + 1):
            if 0 <= neighbour < len(grid):
                assert neighbour in score and score[neighbour] <= score[chosen]
        assert min(visited) >= min(chosen, k0) - 1 and max(visited) <= max(chosen, k0) + 1
        assert all(g["warm"] for g in head.grid)


def test_search_every_walks_the_grid_only_every_kth_round():
    x, y, xv, yv, c = _split(seed=8, sep=1.0)
    grid = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
    every = ProbeConfig(l2_grid=grid, search_every=3)
    head = train_linear_probe(x[:150], y[:150], xv, yv, c, every)   # round 0: the whole grid
    assert len(head.grid) == len(grid) and head.rounds_since_search == 0
    walked = []
    for n in (190, 230, 270, 310, 350, 360):
        previous = head
        head = train_linear_probe(x[:n], y[:n], xv, yv, c, every, warm_start=previous)
        walked.append(len(head.grid) > 1)
        if not walked[-1]:   # between walks: only the kept strength, refitted from its own solution
            assert [g["l2"] for g in head.grid] == [previous.l2] and head.l2 == previous.l2 and head.grid[0]["warm"]
            assert head.rounds_since_search == previous.rounds_since_search + 1
        else:
            assert head.rounds_since_search == 0
            # the same walk as the every-round probe makes from the same previous head
            plain = train_linear_probe(x[:n], y[:n], xv, yv, c, ProbeConfig(l2_grid=grid), warm_start=previous)
            assert [g["l2"] for g in head.grid] == [g["l2"] for g in plain.grid] and head.l2 == plain.l2
    assert walked == [False, False, True, False, False, True]
    # Every round walks by default, and the default leaves the run keys of committed runs as they were.
    assert "search_every" not in ProbeConfig().as_dict() and every.as_dict()["search_every"] == 3
    with pytest.raises(ValueError, match="search_every"):
        ProbeConfig(search_every=0)


@pytest.mark.slow
def test_warm_start_across_rounds_reuses_each_strength():
    x, y, xv, yv, c = _split(seed=9)
    config = ProbeConfig(tol=1e-4)
    first = train_linear_probe(x[:200], y[:200], xv, yv, c, config)
    again = train_linear_probe(x, y, xv, yv, c, config, warm_start=first)
    fresh = train_linear_probe(x, y, xv, yv, c, ProbeConfig(l2_grid=(again.l2,), tol=1e-4))
    assert all(g["warm"] for g in again.grid)
    np.testing.assert_allclose(predict_logits(xv, again.weight, again.bias),
                               predict_logits(xv, fresh.weight, fresh.bias), atol=5e-3)
    with pytest.raises(ValueError, match="warm_start"):
        train_linear_probe(x[:, :5], y, xv[:, :5], yv, c, warm_start=first)


def test_probe_without_validation_chooses_on_a_fifth_of_the_labels():
    x, y, _, _, c = _split(seed=10)
    head = train_linear_probe(x, y, None, None, c)
    assert head.validation == "internal" and head.l2 in ProbeConfig().l2_grid and head.converged
    tiny = train_linear_probe(x[:8], y[:8], None, None, c)
    assert tiny.validation == "none" and np.isfinite(tiny.weight).all()


def test_probe_record_holds_the_per_round_columns():
    x, y, xv, yv, c = _split(seed=11)
    record = train_linear_probe(x, y, xv, yv, c).record()
    assert record["probe_method"] == "logreg" and record["probe_l2"] in ProbeConfig().l2_grid
    assert record["probe_converged"] is True and record["probe_iterations"] >= 1 and record["probe_fits"] >= 2
    assert np.isfinite(record["val_loss"]) and 0 <= record["val_top1"] <= 1 and np.isnan(record["probe_epochs"])
    old = train_linear_probe(x, y, xv, yv, c, ProbeConfig.named("adam_early_stopping")).record()
    assert old["probe_method"] == "early_stopping" and old["probe_epochs"] >= 1 and np.isnan(old["probe_iterations"])


def test_probe_config_names_and_bad_values():
    assert set(PROBE_PRESETS) == {"logreg", "adam_early_stopping", "paper"}
    assert ProbeConfig.named("logreg") == ProbeConfig()
    old = ProbeConfig.named("adam_early_stopping")
    assert (old.method, old.optimizer, old.lr, old.batch_size, old.weight_decay, old.patience) == \
        ("early_stopping", "adam", 1e-2, 1024, 0.0, 3)
    assert ProbeConfig(l2_grid=(0.1, 1.0, 0.01)).l2_grid == (1.0, 0.1, 0.01)
    for bad, match in [(dict(method="lbfgs"), "method"), (dict(l2_grid=()), "l2_grid"),
                       (dict(l2_grid=(0.1, -1.0)), "l2_grid"), (dict(l2_grid=(0.1, 0.1)), "twice"),
                       (dict(tol=0.0), "tol"), (dict(grid_search="all"), "grid_search"),
                       (dict(fast_products="yes"), "fast_products")]:
        with pytest.raises(ValueError, match=match):
            ProbeConfig(**bad)
    with pytest.raises(ValueError, match="probe must be one of"):
        ProbeConfig.named("sklearn")


def test_logreg_beats_early_stopping_where_it_should():
    """Few labels per class and many classes: the regularised, converged fit chosen on validation
    generalises better than a few epochs of Adam (the gap the issue measured on Tiny-ImageNet)."""
    data = gaussian_mixture(40, 20, 64, separation=2.0, seed=12, n_test_per_class=30)
    x, y = data.train_features.astype(np.float32), data.train_labels
    val = np.zeros(y.size, bool)
    for k in range(40):
        val[np.flatnonzero(y == k)[:5]] = True
    args = (x[~val], y[~val], x[val], y[val], 40)
    new = train_linear_probe(*args)
    old = train_linear_probe(*args, ProbeConfig.named("adam_early_stopping"))
    acc = [(predict_logits(data.test_features, h.weight, h.bias).argmax(1) == data.test_labels).mean() for h in (new, old)]
    assert acc[0] > acc[1]


def test_fast_products_approximate_the_float32_ones():
    """The bfloat16 phase must compute the same quantities (to bfloat16's precision), else it only
    wastes iterations before the float32 phase corrects it."""
    from alkit.logreg import _Problem

    x, y = _problem(seed=13, n=300, d=24, c=5)
    xt = _t(x)
    s = _t(sample_weights(y, 5, False))
    exact = _Problem(xt, _t(y, torch.int64), s, 0.3)
    fast = _Problem(xt, _t(y, torch.int64), s, 0.3, x_fast=xt.to(torch.bfloat16))
    w, b = torch.randn(24, 5), torch.randn(5)
    g = torch.randn(300, 5) / 300
    for got, want in zip(fast.gradient(g, w, b), exact.gradient(g, w, b)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-2, atol=2e-2 * float(want.abs().max()))
    np.testing.assert_allclose(fast.logits_change(w, b).numpy(), exact.logits_change(w, b).numpy(),
                               rtol=2e-2, atol=2e-2 * float(exact.logits_change(w, b).abs().max()))
