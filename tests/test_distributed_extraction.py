"""Feature extraction split among torchrun ranks (gloo on CPU): the ranks' shards make the entry a
single process makes, byte for byte; a failing rank stops every rank and loses no finished shard;
each kind of run resumes the other's.  Plus the pure helpers of alkit.data.distributed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch
from image_fixtures import make_imagefolder

from alkit.checks import ParameterError
from alkit.cli.features import features_main
from alkit.data import distributed as dd
from alkit.data.backbones import load_backbone
from alkit.data.datasets import load_dataset
from alkit.data.features import ExtractionInterrupted, extract_features

RES, BATCH, SHARD = 32, 4, 4
COUNTS = {"train": {"ant": 9, "bee": 8, "cat": 7}}   # 24 images = 6 shards: ranks 0 and 1 own 3 each
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")
# What a run's meta.json may differ in: when and how long it ran, on which processes.
TIMING = {"compute_seconds", "images_per_second", "started", "finished", "threads", "sessions", "shards_per_rank"}


@pytest.fixture(autouse=True)
def single_process_env(tmp_path, monkeypatch):
    """No launcher variables leak in from a surrounding job; nothing lands in the user's cache."""
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALKIT_CACHE", str(tmp_path / "alkit-cache"))


@pytest.fixture
def folder(tmp_path):
    return make_imagefolder(tmp_path / "data", COUNTS)


def _argv(folder, cache) -> list[str]:
    return ["--dataset", "imagefolder", "--root", str(folder), "--split", "train", "--out", str(cache),
            "--resolution", str(RES), "--batch-size", str(BATCH), "--shard-size", str(SHARD), "--quiet", "--json"]


def _torchrun(argv: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N -m alkit features …`` (a free port on localhost)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "alkit", "features", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


@contextmanager
def one_thread():
    """One torch thread, as torchrun gives each rank (OMP_NUM_THREADS=1): 1 and 2 threads round some
    float16 features differently (measured), so byte-identity is between equal thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _single(folder, cache, capsys) -> dict:
    """``python -m alkit features …`` in this process, one thread; what it prints."""
    with one_thread():
        assert features_main(_argv(folder, cache)) == 0
    return json.loads(capsys.readouterr().out)


def _assert_same_entry(a: str, b: str) -> None:
    """Byte-identical arrays and paths; identical meta.json but for timing and provenance."""
    for name in ("features.npy", "labels.npy", "indices.npy", "paths.txt"):
        assert open(os.path.join(a, name), "rb").read() == open(os.path.join(b, name), "rb").read(), name
    meta_a, meta_b = (json.load(open(os.path.join(d, "meta.json"))) for d in (a, b))
    for meta in (meta_a, meta_b):
        meta["extraction"] = {k: v for k, v in meta["extraction"].items() if k not in TIMING}
    assert meta_a == meta_b


@pytest.mark.slow
def test_torchrun_ranks_resume_a_single_process_run_byte_identical(folder, tmp_path, capsys):
    reference = _single(folder, tmp_path / "alone", capsys)
    dataset = load_dataset("imagefolder", folder, "train")
    with one_thread(), pytest.raises(ExtractionInterrupted):   # shards 0 and 1 on disk, then stopped
        extract_features(dataset, load_backbone(), resolution=RES, batch_size=BATCH, shard_size=SHARD, device="cpu",
                         cache_dir=tmp_path / "shared", progress=False, stop_after_batches=2, world=dd.SINGLE)
    run = _torchrun(_argv(folder, tmp_path / "shared"))
    assert run.returncode == 0, run.stderr[-3000:]
    printed = json.loads(run.stdout)   # rank 0 alone prints the result
    assert printed["directory"] != reference["directory"] and printed["key"] == reference["key"]
    _assert_same_entry(reference["directory"], printed["directory"])
    extraction = json.load(open(printed["meta"]))["extraction"]
    assert extraction["shards_per_rank"] == [2, 2] and extraction["sessions"] == 2   # 0 and 1 were not redone
    assert not os.path.exists(os.path.join(printed["directory"], "partial"))


@pytest.mark.slow
def test_a_failing_rank_stops_both_keeps_their_shards_and_one_process_resumes(folder, tmp_path, capsys):
    bad = folder / "train" / "cat" / "0006.png"   # the last row: shard 5, rank 1's
    good = bad.read_bytes()
    bad.write_bytes(b"\0" * len(good))   # an unreadable image (the cache key follows the images' bytes)
    run = _torchrun(_argv(folder, tmp_path / "shared"))
    assert run.returncode != 0
    # Each rank says it in one line (the two may interleave on the shared pipe), with no traceback of ours.
    errors = run.stderr.split("python -m alkit features: error: ")[1:]
    assert len(errors) == 2 and all("0006.png" in e for e in errors), run.stderr[-3000:]
    assert any(e.startswith("--root: rank 1 of 2 stopped") for e in errors)   # rank 0 names the failed rank
    assert "alkit/data/features.py" not in run.stderr
    [entry] = (tmp_path / "shared" / "features").iterdir()
    assert sorted(p.name for p in (entry / "partial").glob("shard_*.npy")) == [f"shard_{s:06d}.npy" for s in range(5)]

    # One process resumes the ranks' entry: the five finished shards are kept, shard 5 fails again.
    shards = {p.name: p.stat().st_mtime_ns for p in (entry / "partial").glob("shard_*.npy")}
    assert features_main(_argv(folder, tmp_path / "shared")) != 0
    assert "0006.png" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (entry / "partial").glob("shard_*.npy")} == shards
    # The image repaired: other bytes, another entry, the one a single process makes.
    bad.write_bytes(good)
    reference = _single(folder, tmp_path / "alone", capsys)
    repaired = _single(folder, tmp_path / "shared", capsys)
    _assert_same_entry(reference["directory"], repaired["directory"])
    assert repaired["directory"] != str(entry)


# ---------------------------------------------------------------- the helpers, without a launcher

@pytest.mark.parametrize("n_items", [0, 1, 5, 6, 7, 13])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_owned_gives_every_item_to_exactly_one_rank_in_near_equal_shares(n_items, size):
    shares = [list(dd.owned(n_items, dd.World(r, size, r))) for r in range(size)]
    assert sorted(i for share in shares for i in share) == list(range(n_items))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_world_from_env_reads_the_launcher_variables():
    assert dd.world_from_env({}) == dd.SINGLE
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    world = dd.world_from_env(env)
    assert (world.rank, world.size, world.local_rank, world.is_main, world.is_distributed) == (3, 4, 1, False, True)
    assert dd.world_from_env({"RANK": "0", "WORLD_SIZE": "1"}) == dd.SINGLE
    assert dd.is_main_process({}) and dd.is_main_process({"RANK": "0"}) and not dd.is_main_process({"RANK": "2"})


@pytest.mark.parametrize("env, named", [
    ({"WORLD_SIZE": "2"}, "RANK"),
    ({"RANK": "1"}, "WORLD_SIZE"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK=2"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "MASTER_ADDR"),
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "LOCAL_RANK"),
    ({"LOCAL_RANK": "1"}, "LOCAL_RANK=1"),
])
def test_inconsistent_launcher_variables_are_named_with_the_fix(env, named):
    with pytest.raises(ValueError, match="torchrun") as info:
        dd.world_from_env(env)
    assert named in str(info.value)


def test_a_single_process_needs_no_process_group():
    import torch.distributed as dist

    world = dd.SINGLE
    with dd.process_group(world, torch.device("cpu")) as started:
        assert not started and not dist.is_initialized()
        assert dd.broadcast(5, world) == 5 and dd.all_gather(5, world) == [5] and dd.on_main(lambda: 7, world) == 7
        dd.barrier(world)
        with dd.main_first(world):
            pass
    assert dd.rank_device(torch.device("cpu"), dd.World(1, 2, 1)) == torch.device("cpu")
    assert dd.backend_for(torch.device("cpu")) == "gloo" and dd.backend_for(torch.device("cuda", 0)) == "nccl"
    dd.raise_failures([None, None], dd.World(0, 2, 0))
    with pytest.raises(dd.RankFailed, match="rank 1 of 2 stopped: boom") as info:
        dd.raise_failures([None, dd.failure_report(ParameterError("boom", param="root"), dd.World(1, 2, 1))],
                          dd.World(0, 2, 0))
    assert info.value.param == "root"   # the failed rank's parameter travels: the command names its flag


def test_cli_names_an_inconsistent_world_size(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert features_main(_argv(folder, tmp_path / "c")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "WORLD_SIZE" in err[0] and "torchrun" in err[0]
