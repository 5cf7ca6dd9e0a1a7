"""Run claims are leases: a stale claim is taken over within the lease, whatever its PID or host
now name, and a waiting sweep says what it waits for."""
from __future__ import annotations

import os
import platform
import threading
import time

import numpy as np
import pytest

from alkit.data.synthetic import gaussian_mixture
from alkit.experiments import runs


def _claim(stem, text: str, age_s: float = 0.0):
    claim = stem.with_suffix(".claim")
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(text)
    then = time.time() - age_s
    os.utime(claim, (then, then))
    return claim


def test_a_claim_not_refreshed_is_taken_over_even_if_its_pid_now_runs(tmp_path):
    stem = tmp_path / "margin__seed0"
    # PID reuse: the claim names a live process of this host (our parent), but nobody refreshed it
    _claim(stem, f"{os.getppid()} {platform.node()} -\n", age_s=runs.CLAIM_LEASE_S + 5)
    assert runs.claim_run(stem)
    runs.release_claim(stem)
    # the same claim, refreshed a moment ago: its owner is alive and holds it
    _claim(stem, f"{os.getppid()} {platform.node()} -\n", age_s=1)
    assert not runs.claim_run(stem)


def test_a_claim_from_another_host_holds_while_refreshed_and_expires_after(tmp_path):
    stem = tmp_path / "base__seed1"
    _claim(stem, "4242 some-other-container -\n", age_s=5)
    assert not runs.claim_run(stem)
    assert "held by process 4242 on some-other-container, refreshed 5 s ago" in runs.describe_claim(stem)
    _claim(stem, "4242 some-other-container -\n", age_s=runs.CLAIM_LEASE_S + 1)
    assert runs.claim_run(stem)
    runs.release_claim(stem)


def test_the_owner_refreshes_its_claim_until_it_releases_it(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "CLAIM_HEARTBEAT_S", 0.05)
    stem = tmp_path / "entropy__seed2"
    assert runs.claim_run(stem)
    claim = stem.with_suffix(".claim")
    os.utime(claim, (0, 0))
    deadline = time.time() + 5
    while claim.stat().st_mtime < time.time() - 60 and time.time() < deadline:
        time.sleep(0.02)
    assert claim.stat().st_mtime > time.time() - 60      # refreshed by the heartbeat
    beat = next(t for t in threading.enumerate() if t.name == f"claim {claim.name}")
    runs.release_claim(stem)
    assert not claim.exists()
    beat.join(2)
    assert not beat.is_alive()


@pytest.mark.slow
def test_a_sweep_waiting_on_a_stale_claim_says_so_and_finishes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runs, "CLAIM_LEASE_S", 1.0)
    monkeypatch.setattr(runs, "CLAIM_POLL_S", 0.1)
    data = gaussian_mixture(3, 20, 4, separation=3.0, seed=0, n_test_per_class=4)
    out = tmp_path / "runs"
    # a claim left on another host (a restarted container): fresh now, never refreshed again
    claim = _claim(runs.run_path(out, "random", 0), "777 old-hostname -\n")
    started = time.perf_counter()
    frame = runs.run_sweep(data.train_features.astype(np.float32), data.train_labels, data.test_features,
                           data.test_labels, 3, ["random"], [0], initial_size=6, round_budget=3, rounds=1,
                           val_per_class=2, out_dir=out, progress=False)
    assert len(frame) == 2 and time.perf_counter() - started < 30
    err = capsys.readouterr()
    assert f"waiting: {claim} is held by process 777 on old-hostname" in err.out + err.err
    assert not claim.exists()


@pytest.fixture(autouse=True)
def _no_heartbeats_left():
    yield
    for stop in list(runs._HEARTBEATS.values()):
        stop.set()
    runs._HEARTBEATS.clear()
