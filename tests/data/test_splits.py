"""Seeded splits and manifests (golden hashes), and prepare_data end to end."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from harness.data.cache import open_cache
from harness.data.layout import discover_patches
from harness.data.prepare import PreparedData, prepare_data, synthetic_dir
from harness.data.splits import allocate, make_split, manifest_sha256, read_manifest, write_manifest
from harness.data.synth import write_synthetic_dataset


def _named_patches() -> pd.DataFrame:
    """5 scenes x 5 x 7 patches, built from names alone (independent of the generator)."""
    names = [
        f"patch_{(r - 1) * 7 + c}_{r}_by_{c}_LC08_L1TP_{s:03d}{s + 10:03d}_20160520_20170324_01_T1"
        for s in range(1, 6)
        for r in range(1, 6)
        for c in range(1, 8)
    ]
    return pd.DataFrame({"name": names})


@pytest.fixture(scope="module")
def golden_patches(tmp_path_factory) -> pd.DataFrame:
    root = write_synthetic_dataset(
        tmp_path_factory.mktemp("golden") / "d", scenes=5, patch_size=16, seed=0, test_scenes=0
    )
    found = discover_patches(root)
    return pd.DataFrame({"name": [p.name for p in found], "scene_id": [p.patch.scene_id for p in found]})


# Computed once and pasted: a change means splits (or synthetic names) differ from earlier runs.
GOLDEN = {
    ("synthetic", "scene"): "6e4a04266a1a9d8416948a55e3aa0d3b3f8f6ade808e71b1553f6f498416d118",
    ("synthetic", "random"): "19dc33eaa67014a3b31baea233ccc6ef3b678d8c34a54eb6e1c005e2286110a8",
    ("named", "scene"): "9f237fad6e578ff21bb2834f0fdf06721e4c33f7301c786cca42e8363be4dea5",
    ("named", "random"): "6010facf1d90b12b405bc80692369f9ec3b2a9c8883bbea94e03375448d6dc8b",
}


@pytest.mark.parametrize("kind", ["scene", "random"])
def test_manifest_hash_is_stable_across_runs_and_machines(golden_patches, kind):
    assert manifest_sha256(make_split(golden_patches, kind=kind, seed=0)) == GOLDEN["synthetic", kind]
    named = _named_patches()
    assert manifest_sha256(make_split(named, kind=kind, seed=42)) == GOLDEN["named", kind]
    # Input order does not matter: names are sorted before the seeded permutation.
    shuffled = named.sample(frac=1.0, random_state=3)
    assert manifest_sha256(make_split(shuffled, kind=kind, seed=42)) == GOLDEN["named", kind]


@pytest.mark.parametrize("seed", range(6))
def test_scene_split_never_puts_a_scene_in_two_splits(golden_patches, seed):
    manifest = make_split(golden_patches, kind="scene", seed=seed)
    merged = manifest.merge(golden_patches, on="name")
    assert (merged.groupby("scene_id")["split"].nunique() == 1).all()
    scenes_per_split = merged.groupby("split")["scene_id"].nunique().to_dict()
    assert scenes_per_split == {"train": 3, "val": 1, "test": 1}
    assert list(manifest["name"]) == sorted(golden_patches["name"])


def test_random_split_counts_and_seeds():
    named = _named_patches()
    manifest = make_split(named, kind="random", fractions=(0.6, 0.2, 0.2), seed=1)
    assert manifest["split"].value_counts().to_dict() == {"train": 105, "val": 35, "test": 35}
    other = make_split(named, kind="random", seed=2)
    assert not manifest["split"].equals(other["split"])
    assert make_split(named, kind="random", seed=1).equals(manifest)


def test_allocate_rounds_and_guarantees_a_scene_per_non_zero_split():
    assert allocate(10, (0.6, 0.2, 0.2)) == [6, 2, 2]
    assert allocate(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert allocate(4, (0.9, 0.05, 0.05)) == [2, 1, 1]
    assert allocate(7, (1.0, 0.0, 0.0)) == [7, 0, 0]
    assert allocate(5, (0.5, 0.5, 0.0)) == [3, 2, 0]
    with pytest.raises(ValueError, match="cannot split 2 scenes into 3"):
        allocate(2, (0.6, 0.2, 0.2), unit="scenes")


def test_too_few_scenes_is_a_clear_error(golden_patches):
    two_scenes = golden_patches[golden_patches["scene_id"].isin(sorted(golden_patches["scene_id"].unique())[:2])]
    with pytest.raises(ValueError, match="cannot split 2 scenes into 3 non-empty splits"):
        make_split(two_scenes, kind="scene")
    assert set(make_split(two_scenes, kind="scene", fractions=(0.5, 0.5, 0))["split"]) == {"train", "val"}


@pytest.mark.parametrize(
    ("fractions", "needle"),
    [
        ((0.6, -0.2, 0.6), r"fractions\[1\] \(val\)"),
        ((0.6, 0.2, 0.1), "sum to 1"),
        ((0.5, 0.5), "3 values"),
        ((0.6, float("nan"), 0.4), r"fractions\[1\]"),
        ((0.6, 0.2, "x"), r"fractions\[2\] \(test\)"),
        ({"train": 0.8, "dev": 0.2}, "dev"),
    ],
)
def test_bad_fractions_name_the_key_and_value(fractions, needle):
    with pytest.raises(ValueError, match=needle):
        make_split(_named_patches(), fractions=fractions)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        make_split(_named_patches(), kind="stratified")
    with pytest.raises(ValueError, match="seed"):
        make_split(_named_patches(), seed=-1)
    with pytest.raises(ValueError, match="no patches"):
        make_split(_named_patches().iloc[:0])
    empty_only = _named_patches().assign(nonempty=False)
    with pytest.raises(ValueError, match="none is non-empty"):
        make_split(empty_only, nonempty_only=True)


def test_nonempty_only_keeps_only_nonempty_patches(synthetic_cache):
    patches = open_cache(synthetic_cache).patches
    manifest = make_split(patches, nonempty_only=True, seed=0)
    assert set(manifest["name"]) == set(patches.loc[patches["nonempty"], "name"])


def test_write_and_read_manifest(tmp_path):
    manifest = make_split(_named_patches(), seed=42)
    path = tmp_path / "m" / "split.csv"
    digest = write_manifest(manifest, path)
    assert digest == manifest_sha256(manifest) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.read_bytes().startswith(b"name,split\npatch_")
    back = read_manifest(path)
    assert back.equals(manifest)
    path.write_text("name,fold\nx,1\n")
    with pytest.raises(ValueError, match="columns"):
        read_manifest(path)


# ------------------------------------------------------------------------------- prepare_data
SYNTH = {"scenes": 4, "patch_size": 16, "seed": 2, "test_scenes": 0, "grid": (3, 4)}


def test_prepare_data_synthetic_end_to_end(tmp_path):
    cache_dir = tmp_path / "cache"
    prepared = prepare_data(synthetic=SYNTH, cache_dir=cache_dir)
    assert isinstance(prepared, PreparedData)
    assert synthetic_dir(cache_dir, SYNTH).is_dir()
    assert Path(prepared.manifest_path).parent == cache_dir.resolve()
    assert Path(prepared.manifest_path).name == "split-scene-0.6-0.2-0.2-seed0.csv"
    parts = {s: prepared.indices(s) for s in ("train", "val", "test")}
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts.values())
    together = np.sort(np.concatenate(list(parts.values())))
    np.testing.assert_array_equal(together, np.arange(len(open_cache(cache_dir))))
    assert pickle.loads(pickle.dumps(prepared)) == prepared and len(pickle.dumps(prepared)) < 1000

    # Same call again: same answer, nothing rebuilt.
    stamp = (cache_dir / "images.npy").stat().st_mtime_ns
    assert prepare_data(synthetic=SYNTH, cache_dir=cache_dir) == prepared
    assert (cache_dir / "images.npy").stat().st_mtime_ns == stamp
    # Other split parameters get their own manifest next to the first.
    other = prepare_data(synthetic=SYNTH, cache_dir=cache_dir, split_kind="random", split_seed=3, nonempty_only=True)
    assert Path(other.manifest_path).name == "split-random-0.6-0.2-0.2-seed3-nonempty.csv"
    assert other.split_hash != prepared.split_hash and Path(prepared.manifest_path).exists()
    with pytest.raises(ValueError, match="split must be one of"):
        prepared.indices("validation")


def test_the_data_hash_covers_pixels_the_split_hash_does_not(synthetic_root, copy_tree, tmp_path):
    """Same names in the same splits, one pixel changed: the split hash stays, the data hash moves."""
    root = copy_tree(synthetic_root)
    args = {"root": root, "fractions": (0.5, 0.25, 0.25)}
    first = prepare_data(cache_dir=tmp_path / "a", **args)
    again = prepare_data(cache_dir=tmp_path / "b", **args)  # another node's copy of the same files
    assert (again.split_hash, again.data_hash) == (first.split_hash, first.data_hash)
    # By hand: sha256 over the manifest's rows of "split<TAB>name<TAB>row digest".
    cache, manifest = open_cache(first.cache_dir), read_manifest(first.manifest_path)
    row_of = {name: i for i, name in enumerate(cache.patches["name"])}
    h = hashlib.sha256(b"harness-data-hash v1\n")
    for name, split in zip(manifest["name"], manifest["split"], strict=True):
        h.update(f"{split}\t{name}\t{cache.row_digests[row_of[name]].tobytes().hex()}\n".encode())
    assert first.data_hash == h.hexdigest()

    test_name = manifest.loc[manifest["split"] == "test", "name"].iloc[0]
    red = next(p for p in discover_patches(root) if p.name == test_name).bands["red"]
    pixels = tifffile.imread(red)
    pixels[0, 0] += 1
    tifffile.imwrite(red, pixels, compression="packbits", metadata=None)
    os.utime(red, ns=(red.stat().st_atime_ns, red.stat().st_mtime_ns + 10**9))  # coarse clocks
    edited = prepare_data(cache_dir=tmp_path / "c", **args)
    assert edited.split_hash == first.split_hash and edited.data_hash != first.data_hash


def test_prepare_data_from_a_root_and_argument_errors(synthetic_root, tmp_path):
    prepared = prepare_data(root=synthetic_root, cache_dir=tmp_path / "cache", fractions=(0.5, 0.25, 0.25))
    assert len(prepared.indices("train")) > 0
    with pytest.raises(ValueError, match="exactly one"):
        prepare_data(cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="exactly one"):
        prepare_data(root=synthetic_root, synthetic={}, cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match=r"fractions\[0\] \(train\)"):
        prepare_data(root=synthetic_root, cache_dir=tmp_path / "c", fractions=(-1, 1, 1))
    with pytest.raises(ValueError, match="colour"):
        prepare_data(synthetic={"colour": 3}, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def _prepare_in_child(cache_dir: str, queue) -> None:
    queue.put(prepare_data(synthetic=SYNTH, cache_dir=cache_dir))


def test_two_processes_preparing_the_same_paths_at_once(tmp_path):
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    queue = ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(str(tmp_path / "cache"), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1]
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []
    assert len(open_cache(tmp_path / "cache")) > 0
