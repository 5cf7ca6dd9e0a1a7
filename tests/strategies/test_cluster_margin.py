"""margin_clustering, Cluster-Margin (alkit/strategies/cluster_margin.py).

The round robin over clusters from the smallest, average-linkage clustering of separated blobs
(and its chunked distances against scipy), and that the picks are taken among the lowest margins.
"""
from __future__ import annotations

import numpy as np

from alkit import select
from alkit.strategies.cluster_margin import average_linkage_clusters, condensed_sqrt_distances, round_robin
from strategy_pools import gaussian_pool


def test_round_robin_from_the_smallest_cluster():
    clusters = np.array([0, 0, 0, 2, 2, 1, 1, 1, 1, 3])
    key = np.array([.3, .1, .2, .5, .4, .9, .8, .7, .6, 0])
    # sizes: 3→1, 2→2, 0→3, 1→4; each visit takes the cluster's lowest key
    assert round_robin(clusters, key, 10).tolist() == [9, 4, 1, 8, 3, 2, 7, 0, 6, 5]
    assert round_robin(clusters, key, 3).tolist() == [9, 4, 1]


def test_average_linkage_finds_separated_blobs():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((20, 3)) * 0.1 + m for m in ([0, 0, 0], [10, 0, 0], [0, 10, 0])])
    ids = average_linkage_clusters(x, 3, rng)
    assert len(set(ids[:20])) == len(set(ids[20:40])) == len(set(ids[40:])) == 1 and len(set(ids)) == 3
    from scipy.spatial.distance import pdist
    np.testing.assert_allclose(condensed_sqrt_distances(x, chunk_rows=7), pdist(x), rtol=1e-9, atol=1e-9)
    # capped: 25 points clustered, the rest assigned to the nearest cluster mean
    ids = average_linkage_clusters(x, 3, rng, max_points=25)
    assert len(set(ids[:20])) == len(set(ids[20:40])) == len(set(ids[40:])) == 1 and len(set(ids)) == 3


def test_margin_clustering_takes_candidates_among_the_lowest_margins():
    pool, _ = gaussian_pool(seed=2, n=300)
    from alkit.scores import margin_scores
    from alkit.strategies.uncertainty import score_eligible
    idx, margins = score_eligible(pool, margin_scores)
    picks = select(pool, "margin_clustering", 10, 0)
    lowest = idx[np.argsort(margins)[:100]]  # k_m = 10·b
    assert np.isin(picks, lowest).all()
