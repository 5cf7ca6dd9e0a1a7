"""One contract over every registered strategy, and the edge cases every diversity strategy must
survive (a one-class model, more classes than the budget, a budget over the pool, float16 memory
maps, extreme feature scales).  Each strategy's own tests are in tests/strategies/."""
from __future__ import annotations

import functools
import inspect
import pickle
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from alkit import make_pool
from alkit.data.images import PoolImages
from alkit.pool import PoolState, StrategyCache
from alkit.strategies import available_strategies, register, select
from alkit.strategies.registry import _REGISTRY, StrategyInfo
from conftest import build_pool
from strategy_pools import as_memmap

#: Every registered strategy, those that train on the pool's images (VAAL) included.
NAMES = [info.name for info in available_strategies(images=True)]
#: Those that run on features alone: what feature sweeps run by default.
FEATURE_NAMES = [info.name for info in available_strategies()]
PAPER_STRATEGIES = {"random", "balanced_random", "confidence", "margin", "entropy", "mase", "base", "balancing",
                    "coreset", "badge", "partitioned_coreset", "partitioned_badge", "margin_clustering",
                    "typiclust", "probcover", "vaal"}
#: Small settings for the strategies that train networks on images, so the contract runs in seconds.
TEST_OPTIONS = {"vaal": dict(epochs=1, batch_size=32, latent_dim=8, width=4)}


def with_images(pool: PoolState) -> PoolState:
    """The pool with random 16-px images, one per row (fixed by the pool's size)."""
    pixels = np.random.default_rng(pool.size).integers(0, 256, (pool.size, 16, 16, 3), dtype=np.uint8)
    return replace(pool, images=PoolImages.from_arrays(pixels))


def strategy(name: str) -> StrategyInfo:
    """The registered strategy, with :data:`TEST_OPTIONS` bound."""
    info = _REGISTRY[name]
    if name not in TEST_OPTIONS:
        return info
    return replace(info, fn=functools.partial(info.fn, **TEST_OPTIONS[name]))


def run(pool, name, budget, seed, truth):
    if "images" in _REGISTRY[name].needs and pool.images is None:
        pool = with_images(pool)
    return select(pool, strategy(name), budget, seed, oracle_labels=truth if _REGISTRY[name].oracle else None)


def test_every_paper_strategy_is_registered_and_documented():
    assert PAPER_STRATEGIES <= set(NAMES)
    for info in available_strategies():
        assert info.summary, f"{info.name} has no docstring summary"
        assert len(info.fn.__doc__) > 60, f"{info.name}: the docstring must give the paper and the formula"
    oracles = {i.name for i in available_strategies() if i.oracle}
    assert oracles == {"balanced_random", "confidence_class_matched", "margin_class_matched",
                       "entropy_class_matched"}


@pytest.mark.parametrize("name", NAMES)
def test_contract_basic(small_pool, name):
    pool, truth = small_pool
    picks = run(pool, name, 17, 3, truth)
    assert picks.dtype == np.int64 and picks.shape == (17,)
    assert np.unique(picks).size == 17
    assert not pool.labeled[picks].any() and not pool.held_out[picks].any()
    again = run(pool, name, 17, 3, truth)
    np.testing.assert_array_equal(np.sort(picks), np.sort(again))


@pytest.mark.parametrize("name", NAMES)
def test_contract_budget_larger_than_pool(small_pool, name):
    pool, truth = small_pool
    n_eligible = int(pool.eligible.sum())
    picks = run(pool, name, n_eligible + 50, 1, truth)
    np.testing.assert_array_equal(np.sort(picks), pool.eligible_indices())


@pytest.mark.parametrize("name", NAMES)
def test_contract_model_predicts_one_class(small_pool, name):
    pool, truth = small_pool
    weight = np.zeros_like(pool.weight)
    bias = np.zeros_like(pool.bias)
    bias[2] = 5.0
    one_class = replace(pool, weight=weight, bias=bias)
    picks = run(one_class, name, 11, 0, truth)
    assert np.unique(picks).size == 11 and one_class.eligible[picks].all()


@pytest.mark.parametrize("name", NAMES)
def test_contract_more_classes_than_budget(name):
    pool, truth = build_pool(num_classes=20, n_max=15, dim=6, n_labeled=40, n_held=10, seed=5)
    picks = run(pool, name, 7, 2, truth)
    assert np.unique(picks).size == 7 and pool.eligible[picks].all()


@pytest.mark.parametrize("name", NAMES)
def test_contract_float16_memmap(tmp_path, small_pool, name):
    pool, truth = small_pool
    path = tmp_path / "f.npy"
    np.save(path, pool.features.astype(np.float16))
    mm = replace(pool, features=np.load(path, mmap_mode="r"))
    picks = run(mm, name, 9, 4, truth)
    assert np.unique(picks).size == 9 and mm.eligible[picks].all()


@pytest.mark.parametrize("name", NAMES)
def test_contract_state_in_the_open(small_pool, name, monkeypatch):
    """A strategy is a function of its arguments: its first call with a fresh cache picks as a call
    without one; what it keeps goes into the cache it was given, under its own name, as derived
    state that a checkpoint can hold (no features, no opaque objects); called directly (not through
    select) on a small pool, it never changes torch's thread count; and it takes no benchmark hook."""
    pool, truth = small_pool
    if "images" in _REGISTRY[name].needs:
        pool = with_images(pool)
    info = strategy(name)
    hooks = {"timings", "report"} & set(inspect.signature(_REGISTRY[name].fn).parameters)
    assert not hooks, f"{name} takes the engines' benchmark hook {hooks}"
    set_threads = []
    with monkeypatch.context() as patched:
        patched.setattr(torch, "get_num_threads", lambda: 4)
        patched.setattr(torch, "set_num_threads", lambda n: set_threads.append(n))
        info.fn(replace(pool, oracle_labels=truth if info.oracle else None), 9, np.random.default_rng(4))
    assert set_threads == []
    cache = StrategyCache(pool.features)
    with_cache = run(replace(pool, cache=cache), name, 9, 4, truth)
    np.testing.assert_array_equal(with_cache, run(pool, name, 9, 4, truth))
    keys = [k for k in (*cache.run, *cache.shared) if k[0] not in ("registry", "alkit.pool")]
    assert all(isinstance(k, tuple) and k[0] == name.split("_")[0] for k in keys), keys
    pickle.dumps(cache.state_dict())   # what a run's checkpoint keeps: derived state, never the features


def test_cache_is_bound_to_one_feature_matrix(small_pool):
    pool, _ = small_pool
    cache = StrategyCache(pool.features)
    with pytest.raises(ValueError, match="cache is bound to another feature matrix"):
        replace(pool, features=pool.features.copy(), cache=cache)
    with pytest.raises(ValueError, match="cache must be"):
        replace(pool, cache={})
    with pytest.raises(ValueError, match="shared holds work for features of shape"):
        StrategyCache(pool.features[:10], shared=cache.shared)
    StrategyCache(pool.features.copy(), shared=cache.shared)   # the same data again: a new run's cache


def test_select_runs_small_pools_on_one_thread_and_restores_the_count(small_pool):
    pool, _ = small_pool
    seen = []

    def spy(state, budget, rng):
        """Records torch's thread count during the call."""
        seen.append(torch.get_num_threads())
        return state.eligible_indices()[:budget]

    before = torch.get_num_threads()
    select(pool, spy, 2, 0)
    assert seen == [1] and torch.get_num_threads() == before


def test_honest_strategies_never_see_hidden_labels(small_pool):
    pool, truth = small_pool
    seen = {}

    def spy(state: PoolState, budget, rng):
        """Spy strategy for the test."""
        seen["oracle"] = state.oracle_labels
        seen["labels"] = state.labels.copy()
        return state.eligible_indices()[:budget]

    leaky = replace(pool, oracle_labels=truth)
    select(leaky, spy, 3, 0)
    assert seen["oracle"] is None
    assert (seen["labels"][~pool.labeled] == -1).all()


def test_oracle_requires_labels(small_pool):
    pool, _ = small_pool
    with pytest.raises(ValueError, match="oracle"):
        select(pool, "balanced_random", 5, 0)


def test_user_callable_and_registration(small_pool):
    pool, _ = small_pool

    def farthest_from_origin(state, budget, rng):
        """Pick the points with the largest feature norm."""
        idx = state.eligible_indices()
        norms = np.linalg.norm(state.features_of(idx), axis=1)
        return idx[np.argsort(-norms)[:budget]]

    picks = select(pool, farthest_from_origin, 4, 0)
    idx = pool.eligible_indices()
    expected = idx[np.argsort(-np.linalg.norm(pool.features_of(idx), axis=1))[:4]]
    np.testing.assert_array_equal(picks, expected)

    def bad(state, budget, rng):
        """Returns a labelled point."""
        return state.labeled_indices()[:budget]

    with pytest.raises(ValueError, match="labelled or held-out"):
        select(pool, bad, 3, 0)
    with pytest.raises(ValueError, match="already registered"):
        register("margin")(farthest_from_origin)


def test_image_strategies_say_which_data_they_need(small_pool):
    """A strategy that trains on images refuses a pool without them, naming what to provide; feature
    sweeps never list it; the linear loop refuses it before any compute unless given images."""
    from alkit.loop import run_active_learning

    pool, _ = small_pool
    assert "vaal" in NAMES and "vaal" not in FEATURE_NAMES
    with pytest.raises(ValueError, match="needs images= .*alkit finetune"):
        select(pool, "vaal", 3, 0)
    with pytest.raises(ValueError, match="needs images="):
        _REGISTRY["vaal"].fn(pool, 3, np.random.default_rng(0))
    y = np.arange(pool.size) % pool.num_classes
    with pytest.raises(ValueError, match="pass images="):
        run_active_learning(pool.features, y, pool.features, y, pool.num_classes, "vaal", seed=0, initial_size=10,
                            round_budget=5, rounds=1, progress=False)


def test_readme_lists_every_registered_strategy():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name in FEATURE_NAMES if f"`{name}`" not in readme]
    assert not missing, f"README strategy table lacks {missing}"


#: Strategies whose picks are a function of the pool state alone (exact ties aside): every other
#: one draws from its seed (quotas, k-means++, draws within classes, clusters, random steps).
DETERMINISTIC = {"confidence", "margin", "entropy", "mase", "coreset"}


def global_rngs_seeded(value: int) -> None:
    """Seed every global generator a strategy might wrongly draw from: numpy's, Python's, torch's."""
    np.random.seed(value)
    random.seed(value)
    torch.manual_seed(value)


@pytest.fixture
def global_rngs_restored():
    """The global generators as they were before the test."""
    states = np.random.get_state(), random.getstate(), torch.get_rng_state()
    yield
    np.random.set_state(states[0])
    random.setstate(states[1])
    torch.set_rng_state(states[2])


def rng_contract_failures(picks_with, draws: bool) -> list[str]:
    """How a strategy breaks the rule that its only randomness is the ``rng`` it is given.

    ``picks_with(seed)`` runs it with ``default_rng(seed)`` and returns its picks as a set.  The same
    seed must give the same picks whatever the global generators hold (numpy, Python, torch seeded
    two ways); a strategy that ``draws`` must change its picks with the seed (one of three seeds
    differs), a deterministic one must not."""
    failures = []
    picks = {}
    for seed, global_seed in ((3, 1), (3, 2), (4, 1), (5, 2)):
        global_rngs_seeded(global_seed)
        picks[seed, global_seed] = picks_with(seed)
    if picks[3, 1] != picks[3, 2]:
        global_rngs_seeded(1)
        if picks_with(3) == picks[3, 1]:
            failures.append("its picks follow a global generator (numpy, random or torch), not its rng")
        else:
            failures.append("the same seed gives other picks: it draws from a generator nobody seeded")
    varies = len({frozenset(picks[key]) for key in ((3, 1), (4, 1), (5, 2))}) > 1   # seeds 3, 4, 5
    if draws and not varies:
        failures.append("it ignores its rng: seeds 3, 4 and 5 give the same picks")
    if not draws and varies:
        failures.append("it is listed as deterministic, yet its picks change with the seed")
    return failures


@pytest.mark.parametrize("name", NAMES)
def test_contract_strategies_draw_only_from_the_rng_they_are_given(small_pool, name, global_rngs_restored):
    """A strategy that draws must draw from the seed it is given, and from nothing else: the same
    seed gives the same picks whatever numpy's, Python's and torch's global generators hold; other
    seeds, other picks (one of three here).  A deterministic one picks the same points whatever
    the seed."""
    pool, truth = small_pool
    failures = rng_contract_failures(lambda seed: set(run(pool, name, 17, seed, truth).tolist()),
                                     draws=name not in DETERMINISTIC)
    assert not failures, f"{name}: {'; '.join(failures)}"


def _draws_well(state, budget, rng):
    """Random picks from the rng it is given."""
    return rng.choice(state.eligible_indices(), budget, replace=False)


def _fixed_seed(state, budget, rng):
    """Random-looking picks from a generator of its own, seeded once: the rng is ignored."""
    return np.random.default_rng(0).choice(state.eligible_indices(), budget, replace=False)


def _unseeded(state, budget, rng):
    """Picks from a fresh, unseeded generator."""
    return np.random.default_rng().choice(state.eligible_indices(), budget, replace=False)


def _numpy_global(state, budget, rng):
    """Picks from numpy's global generator."""
    return np.random.choice(state.eligible_indices(), budget, replace=False)


def _torch_global(state, budget, rng):
    """Picks from torch's global generator."""
    idx = state.eligible_indices()
    return idx[torch.randperm(idx.size).numpy()[:budget]]


def _half_from_the_rng(state, budget, rng):
    """Half its picks from the rng, half from Python's global generator."""
    idx = state.eligible_indices().tolist()
    first = rng.choice(idx, budget // 2, replace=False).tolist()
    return np.array(first + random.sample([i for i in idx if i not in first], budget - len(first)), np.int64)


@pytest.mark.parametrize("fn, caught", [
    (_draws_well, None),
    (_fixed_seed, "ignores its rng"),
    (_unseeded, "nobody seeded"),
    (_numpy_global, "global generator"),
    (_torch_global, "global generator"),
    (_half_from_the_rng, "global generator"),
])
def test_the_rng_contract_catches_a_strategy_that_ignores_its_rng(small_pool, fn, caught, global_rngs_restored):
    pool, _ = small_pool
    failures = rng_contract_failures(lambda seed: set(select(pool, fn, 17, seed).tolist()), draws=True)
    if caught is None:
        assert failures == []
    else:
        assert len(failures) == 1 and caught in failures[0], failures


# ----------------------------------------------------------------------------- diversity edge cases
DIVERSITY = ["coreset", "badge", "partitioned_coreset", "partitioned_badge", "balancing", "margin_clustering",
             "typiclust", "probcover"]


@pytest.mark.parametrize("name", DIVERSITY)
def test_edge_cases(name, tmp_path):
    rng = np.random.default_rng(0)
    n, d, c = 120, 6, 8
    x = as_memmap(rng.standard_normal((n, d)).astype(np.float16), tmp_path)
    w = np.zeros((c, d), np.float32)
    b = np.zeros(c, np.float32)
    b[2] = 30.0  # the model predicts one class only
    for labels in (np.full(n, -1), np.where(np.arange(n) < 10, np.arange(n) % 3, -1)):
        pool = make_pool(x, labels, c, weight=w, bias=b)
        for budget in (1, 5, 500):  # C > budget, budget > pool
            picks = select(pool, name, budget, 4)
            assert picks.size == min(budget, pool.eligible.sum())
            np.testing.assert_array_equal(picks, select(pool, name, budget, 4))


@pytest.mark.parametrize("name", ["coreset", "typiclust"])
@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_distance_strategies_pick_the_same_points_at_extreme_scales(name, scale):
    """Distances of 1e20-scale features overflow float32 (coreset returned duplicate picks; faiss's
    k-means aborted the process); features are scaled by a power of two first: the same picks."""
    from alkit.strategies import select
    from conftest import build_pool

    pool, _ = build_pool(num_classes=5, n_max=40, dim=6, n_labeled=20, n_held=5, seed=8, head=False)
    scaled = replace(pool, features=(pool.features.astype(np.float64) * scale).astype(np.float32))
    np.testing.assert_array_equal(np.sort(select(scaled, name, 12, 3)), np.sort(select(pool, name, 12, 3)))
