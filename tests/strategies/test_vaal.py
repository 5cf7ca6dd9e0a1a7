"""VAAL: the networks, the formula (picks = the smallest discriminator scores), determinism and the
inputs it needs; the shared contract (tests/test_contract.py) covers it too."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from alkit.data.images import PoolImages
from alkit.pool import PoolState
from alkit.strategies import select
from alkit.strategies.vaal import VAE, Discriminator, vaal, vaal_scores

SMALL = dict(epochs=2, batch_size=16, latent_dim=8, width=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def image_pool(n_labeled=20, n_like=30, n_unlike=30, size=16, seed=0):
    """Labelled images are dark; half the unlabelled ones are dark too, half bright."""
    rng = np.random.default_rng(seed)
    dark = lambda k: rng.integers(0, 60, (k, size, size, 3))     # noqa: E731
    bright = lambda k: rng.integers(190, 256, (k, size, size, 3))  # noqa: E731
    pixels = np.concatenate([dark(n_labeled), dark(n_like), bright(n_unlike)]).astype(np.uint8)
    n = pixels.shape[0]
    labeled = np.zeros(n, bool)
    labeled[:n_labeled] = True
    labels = np.where(labeled, np.arange(n) % 2, -1).astype(np.int64)
    features = rng.normal(size=(n, 4)).astype(np.float32)
    pool = PoolState(features=features, labeled=labeled, held_out=np.zeros(n, bool), labels=labels, num_classes=2,
                     images=PoolImages.from_arrays(pixels, mean=(0.5,) * 3, std=(0.5,) * 3))
    return pool, np.arange(n_labeled + n_like, n)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_vae_reconstructs_the_input_size(size):
    vae, disc = VAE(size, latent_dim=8, width=4), Discriminator(8)
    mu, logvar = vae.encode(torch.zeros(2, 3, size, size))
    assert mu.shape == logvar.shape == (2, 8)
    assert vae.decode(mu).shape == (2, 3, size, size)
    assert disc(mu).shape == (2,) and ((disc(mu) > 0) & (disc(mu) < 1)).all()


def test_picks_are_the_smallest_discriminator_scores():
    pool, _ = image_pool()
    idx, scores = vaal_scores(pool, np.random.default_rng(5), **SMALL)
    assert np.array_equal(idx, pool.eligible_indices()) and ((scores > 0) & (scores < 1)).all()
    picks = vaal(pool, 7, np.random.default_rng(5), **SMALL)
    np.testing.assert_array_equal(picks, np.sort(idx[np.argsort(scores, kind="stable")[:7]]))


def test_picks_the_images_least_like_the_labelled_ones():
    """Most dark images are labelled, every bright one is not: the discriminator learns D ≈ P(labelled)
    high on dark, low on bright codes, and the picks are bright (a sign error in the score picks dark
    ones).  β = 0.01: with the authors' batch-summed KL against a pixel-mean MSE, codes of 80 tiny
    images collapse and D is left with noise."""
    pool, unlike = image_pool(n_labeled=40, n_like=10, n_unlike=30)
    picks = vaal(pool, 10, np.random.default_rng(0), **dict(SMALL, epochs=10, beta=0.01))
    assert np.isin(picks, unlike).mean() >= 0.7, picks


def test_deterministic_for_a_seed_and_held_to_the_selection_contract():
    pool, _ = image_pool()
    a = vaal(pool, 9, np.random.default_rng(3), **SMALL)
    b = vaal(pool, 9, np.random.default_rng(3), **SMALL)
    np.testing.assert_array_equal(a, b)
    assert np.unique(a).size == 9 and pool.eligible[a].all()


def test_says_what_it_needs():
    pool, _ = image_pool()
    with pytest.raises(ValueError, match="needs images="):
        select(replace(pool, images=None), "vaal", 3, 0)
    with pytest.raises(ValueError, match="unknown option"):
        vaal(pool, 3, np.random.default_rng(0), epoch=3)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        vaal(pool, 3, np.random.default_rng(0), **dict(SMALL, epochs=0))
    odd = replace(pool, images=PoolImages.from_arrays(np.zeros((pool.size, 20, 20, 3), np.uint8)))
    with pytest.raises(ValueError, match="multiple of 16"):
        vaal(odd, 3, np.random.default_rng(0), **SMALL)
    with pytest.raises(ValueError, match="images holds 3 images but the pool has"):
        replace(pool, images=PoolImages.from_arrays(np.zeros((3, 16, 16, 3), np.uint8)))
