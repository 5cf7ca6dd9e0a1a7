"""The fine-tuning loop on a tiny generated image set (3 classes × 30 images of 16 px, CPU): the
linear loop's rows and splits, every strategy for a round, re-embedding, resume after a kill, the
sharding helpers, the presets and the command line."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from alkit.finetune import (PRESETS, FineTuningTrainer, Ranks, assemble_chunks, batch_shard, class_weights,
                            finetune_config, network_source, owned_chunks)
from alkit.data.images import PoolImages, random_crop_flip
from alkit.loop import run_active_learning
from alkit.strategies import available_strategies
from image_fixtures import make_imagefolder

TIMING = ["selection_seconds", "training_seconds"]
SCHEDULE = dict(seed=0, initial_size=12, round_budget=6, rounds=2, val_per_class=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def colour_images(n_per_class: int, seed: int, size: int = 16) -> tuple[PoolImages, np.ndarray]:
    """Class c is a noisy image of one primary colour: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])
    x = np.clip(base[y][:, None, None, :] + rng.normal(0, 50, (y.size, size, size, 3)), 0, 255).astype(np.uint8)
    return PoolImages.from_arrays(x, mean=(0.5,) * 3, std=(0.25,) * 3), y


@pytest.fixture(scope="module")
def data():
    train, y = colour_images(30, 0)
    test, ty = colour_images(10, 1)
    return train, y, test, ty


#: Settings of the trainer (the rest go to the loop).
RECIPE = ("network", "config", "on_epoch", "strategy_options", "device")


def finetune(data, strategy="margin", **kwargs):
    """A run of the loop with the fine-tuning trainer (tiny CNN, tiny preset unless told)."""
    train, y, test, ty = data
    recipe = {"network": "tiny_cnn", "config": "tiny", **{k: kwargs.pop(k) for k in RECIPE if k in kwargs}}
    settings = {**SCHEDULE, "progress": False, **kwargs}
    return run_active_learning(train, y, test, ty, 3, strategy, trainer=FineTuningTrainer(**recipe), **settings)


def test_rows_splits_and_result_match_the_linear_loop(data):
    train, y, test, ty = data
    tuned = finetune(data)
    mean_colour = lambda imgs: imgs(np.arange(len(imgs))).mean(dim=(2, 3)).numpy()  # noqa: E731
    linear = run_active_learning(mean_colour(train), y, mean_colour(test), ty, 3, "margin", progress=False, **SCHEDULE)
    assert list(tuned.frame().columns) == list(linear.frame().columns)
    np.testing.assert_array_equal(tuned.validation_indices, linear.validation_indices)
    np.testing.assert_array_equal(tuned.picks[0], linear.picks[0])        # same seed: same initial pool
    frame = tuned.frame()
    assert frame["n_labeled"].tolist() == [12, 18, 24] and (frame["probe_method"] == "finetune").all()
    assert tuned.label_counts.shape == tuned.per_class_accuracy.shape == (3, 3)
    assert tuned.config["regime"] == "finetune" and len(tuned.config["rounds_detail"]) == 3
    assert frame["top1"].iloc[-1] > 0.5    # the network learns the colours


STRATEGIES = [info.name for info in available_strategies(images=True)]


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_registered_strategy_runs_a_round(data, name):
    result = finetune(data, name, rounds=1)
    picks = result.picks[1]
    assert picks.size == 6 and np.unique(picks).size == 6
    assert not np.isin(picks, result.picks[0]).any() and not np.isin(picks, result.validation_indices).any()


def test_strategies_get_the_current_networks_embedding_and_images(data):
    """Each round the pool is re-embedded with that round's network: the features change between
    rounds and the head acts on them; the pool's images are handed over."""
    seen = []

    def spy(pool, budget, rng):
        """Records what the pool state carries."""
        seen.append((pool.features.copy(), pool.weight.copy(), pool.images))
        return pool.eligible_indices()[:budget]

    finetune(data, spy, rounds=2)
    (f1, w1, images), (f2, w2, _) = seen
    assert f1.shape == (90, 32) and w1.shape == (3, 32) and len(images) == 90
    assert not np.allclose(f1, f2) and not np.allclose(w1, w2)


def _kill_at(when):
    class Killed(RuntimeError):
        pass

    def hook(*args):
        if args == when:
            raise Killed(f"killed at {when}")
    return Killed, hook


@pytest.mark.parametrize("kill", ["after_round_1", "mid_round_1", "round_2_start"])
def test_a_killed_run_resumes_with_the_rows_of_an_uninterrupted_one(data, tmp_path, kill):
    whole = finetune(data, "vaal", rounds=2)
    ckpt = tmp_path / "run.ckpt"
    if kill == "round_2_start":   # no mid-round checkpoint: the one written when round 1 ended
        config = finetune_config("tiny", checkpoint_seconds=1e9)
        killed, hook = _kill_at((2, 1))
        with pytest.raises(killed):
            finetune(data, "vaal", rounds=2, checkpoint=ckpt, config=config, on_epoch=hook)
        state = pickle.loads(ckpt.read_bytes())
        loop, finished = state["state"], state["state"]["previous"]   # the loop at round 2's start; round 1's network
        assert state["training"] is None and len(loop["rows"]) == 2
        assert finished["round"] == 1 and {"model", "optimizer"} <= set(finished)
        resumed = finetune(data, "vaal", rounds=2, checkpoint=ckpt, config=config)
        pd.testing.assert_frame_equal(resumed.frame().drop(columns=TIMING), whole.frame().drop(columns=TIMING))
        return
    if kill == "after_round_1":
        killed, hook = _kill_at((1,))
        with pytest.raises(killed):
            finetune(data, "vaal", rounds=2, checkpoint=ckpt, on_round=lambda row, picks: hook(row["round"]))
    else:   # inside round 1's training, after its first epoch
        killed, hook = _kill_at((1, 1))
        with pytest.raises(killed):
            finetune(data, "vaal", rounds=2, checkpoint=ckpt, on_epoch=hook)
    assert ckpt.exists()
    epochs = []
    resumed = finetune(data, "vaal", rounds=2, checkpoint=ckpt, on_epoch=lambda r, e: epochs.append((r, e)))
    # Resumed where it stopped: round 1 had finished training (its last epoch's checkpoint), or was at epoch 1.
    assert epochs[0] == ((2, 1) if kill == "after_round_1" else (1, 2))
    pd.testing.assert_frame_equal(resumed.frame().drop(columns=TIMING), whole.frame().drop(columns=TIMING))
    for a, b in zip(resumed.picks, whole.picks, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="belongs to another run"):
        finetune(data, "vaal", rounds=1, checkpoint=ckpt)


def test_resnet18_from_scratch_and_class_weights(data):
    result = finetune(data, "random", rounds=0, network="resnet18_scratch",
                      config=finetune_config("tiny", class_weighted=True, epochs=1))
    assert np.isfinite(result.frame()["top1"]).all()
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 3).numpy(), [4 / 9, 4 / 3, 0.0])


def test_the_same_seed_gives_the_same_network():
    a = network_source("tiny_cnn").build(3, torch.Generator().manual_seed(1))
    b = network_source("tiny_cnn").build(3, torch.Generator().manual_seed(1))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_sharding_helpers_split_and_gather_every_row_once():
    rows = np.arange(11) * 3
    shards = [batch_shard(rows, Ranks(r, 3)) for r in range(3)]
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), rows)
    values = np.arange(23, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    parts = [[(s, values[s:e]) for s, e in owned_chunks(23, 5, Ranks(r, 2))] for r in range(2)]
    assert [len(p) for p in parts] == [3, 2]
    np.testing.assert_array_equal(assemble_chunks(parts, 23), values)
    with pytest.raises(ValueError, match="cover 13 rows, expected 23"):
        assemble_chunks(parts[:1], 23)


def test_random_crop_flip_is_seeded_and_keeps_the_pixels():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    a = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    b = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    assert a.shape == x.shape and torch.equal(a, b)
    flipped = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    for img, out in zip(x, flipped):
        assert torch.equal(out, img) or torch.equal(out, img.flip(2))


def test_presets_hold_the_papers_recipes():
    cifar, lt, imagenet = PRESETS["paper_cifar10"], PRESETS["paper_cifar10_lt"], PRESETS["paper_imagenet"]
    assert (cifar.lr, cifar.momentum, cifar.weight_decay, cifar.schedule, cifar.cosine_t_max, cifar.epochs,
            cifar.patience) == (1e-3, 0.9, 5e-4, "cosine", 200, 200, 50)
    assert (lt.lr, lt.weight_decay, lt.class_weighted) == (2e-3, 0.0, True)
    assert (imagenet.lr, imagenet.weight_decay, imagenet.schedule, imagenet.step_size, imagenet.epochs,
            imagenet.patience) == (1e-3, 0.0, "step", 10, 60, 30)
    assert finetune_config("paper_cifar10", epochs=5).vaal["epochs"] == 5
    with pytest.raises(ValueError, match="preset must be one of"):
        finetune_config("paper")
    with pytest.raises(ValueError, match="unknown fine-tuning setting"):
        finetune_config("tiny", lr_vae=1.0)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        finetune_config("tiny", epochs=0)


def test_command_line_on_a_tiny_image_folder(tmp_path, capsys):
    from alkit.cli.finetune import finetune_main as main

    root = make_imagefolder(tmp_path / "imgs", {"train": {"a": 12, "b": 12}, "test": {"a": 4, "b": 4}})
    out = tmp_path / "rows.csv"
    argv = ["--dataset", "imagefolder", "--root", str(root), "--strategies", "random,vaal", "--seeds", "0",
            "--initial", "6", "--budget", "4", "--rounds", "1", "--preset", "tiny", "--backbone", "tiny_cnn",
            "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    rows = pd.read_csv(out)
    assert rows[["strategy", "round"]].values.tolist() == [["random", 0], ["random", 1], ["vaal", 0], ["vaal", 1]]
    assert {"dataset", "data_source", "top1", "labeled_gini"} <= set(rows.columns)
    stems = sorted(p.name for p in (tmp_path / "rows.csv.runs").iterdir())
    assert stems == ["random__seed0.csv", "random__seed0.json", "random__seed0.npz", "vaal__seed0.csv",
                     "vaal__seed0.json", "vaal__seed0.npz"]          # checkpoints removed once saved
    from alkit.cli import main as alkit_main

    assert alkit_main(["finetune", *argv]) == 0                      # python -m alkit finetune: runs loaded
    pd.testing.assert_frame_equal(pd.read_csv(out), rows)
    capsys.readouterr()
    assert main([*argv[:-3], "--budget", "40", "--out", str(out)]) == 2
    assert "--budget" in capsys.readouterr().err
    assert main([*argv[:5], "nope", *argv[6:]]) == 2
    assert "--strategies: strategy 'nope' is unknown" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_with_two_cpu_ranks_gives_the_single_process_runs(tmp_path):
    """gloo, 2 ranks: each trains on half of every batch, evaluation and re-embedding are gathered,
    rank 0 selects and writes; the schedule and splits are those of one process (BatchNorm statistics
    per shard move the losses slightly)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = make_imagefolder(tmp_path / "imgs", {"train": {"a": 12, "b": 12}, "test": {"a": 4, "b": 4}})
    args = ["-m", "alkit", "finetune", "--dataset", "imagefolder", "--root", str(root), "--strategies", "margin",
            "--initial", "6", "--budget", "4", "--rounds", "1", "--preset", "tiny", "--backbone", "tiny_cnn",
            "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "ddp.csv")], env=env, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote 2 rows") == 1          # rank 0 alone writes
    from alkit.cli.finetune import finetune_main as main

    assert main([*args[3:], "--out", str(tmp_path / "one.csv")]) == 0
    ddp, one = pd.read_csv(tmp_path / "ddp.csv"), pd.read_csv(tmp_path / "one.csv")
    assert list(ddp.columns) == list(one.columns) and ddp["n_labeled"].tolist() == one["n_labeled"].tolist()
    np.testing.assert_allclose(ddp["val_loss"], one["val_loss"], atol=0.05)
    a, b = (np.load(tmp_path / f"{name}.csv.runs" / "margin__seed0.npz") for name in ("ddp", "one"))
    np.testing.assert_array_equal(a["validation_indices"], b["validation_indices"])
    np.testing.assert_array_equal(a["picks_round0"], b["picks_round0"])
    assert np.unique(a["picks_round1"]).size == 4


def test_predict_runs_the_network_in_eval_mode_and_restores_its_mode(data):
    """A mutation audit's survivor: predict() left the network in train mode (batch statistics of the
    batch instead of the running ones; BatchNorm's running statistics moved by every prediction)."""
    from alkit.finetune import predict

    train, _, _, _ = data
    net = network_source("resnet18_scratch").build(3, torch.Generator().manual_seed(0))
    net.train()
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    rows = np.arange(8)
    _, one = predict(net, train, rows, torch.device("cpu"), batch_size=8)
    _, alone = predict(net, train, rows[:1], torch.device("cpu"), batch_size=1)
    assert net.training   # its mode is restored
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())
    np.testing.assert_allclose(alone[0], one[0], rtol=1e-4, atol=1e-5)   # a row's logits do not depend on its batch
