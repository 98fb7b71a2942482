"""Ingest to .npy memmaps: round trips (real and synthetic), reuse, invalidation, atomicity, bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from harness.data.cache import (
    IMAGES,
    PATCH_COLUMNS,
    ROW_DIGESTS,
    cache_bytes,
    check_free_space,
    ingest,
    open_cache,
    verify,
)
from harness.data.decode import read_plain_tiff
from harness.data.layout import BANDS, DatasetError, discover_patches, read_csv_names
from harness.data.synth import TEST_DIR, TRAIN_DIR


def _leftovers(parent: Path) -> list[str]:
    """Temp or trash folders an ingest left next to the cache path."""
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_real_sample_round_trip(real_sample_root, tmp_path):
    cache = open_cache(ingest(real_sample_root, tmp_path / "cache", progress=False))
    (pf,) = discover_patches(real_sample_root)
    assert cache.images.shape == (1, 4, 384, 384) and cache.images.dtype == np.uint16
    assert cache.masks.shape == (1, 384, 384) and cache.masks.dtype == np.uint8
    for i, band in enumerate(BANDS):  # band order red, green, blue, nir
        np.testing.assert_array_equal(cache.images[0, i], tifffile.imread(pf.bands[band]))
    np.testing.assert_array_equal(cache.masks[0], tifffile.imread(pf.gt) // 255)
    assert set(np.unique(cache.masks)) == {0, 1}
    assert round(float(cache.masks.mean()) * 100, 1) == 30.7
    assert cache.patch_size == 384
    row = cache.patches.iloc[0]
    assert (row["name"], row["row"], row["col"], bool(row["nonempty"])) == (pf.name, 10, 12, True)
    assert row["scene_id"] == "LC08_L1TP_002053_20160520_20170324_01_T1"


def test_synthetic_round_trip_matches_tifffile(synthetic_root, synthetic_cache):
    cache = open_cache(synthetic_cache)
    patches = discover_patches(synthetic_root, subset="train")
    assert list(cache.patches.columns) == PATCH_COLUMNS
    assert list(cache.patches["name"]) == [p.name for p in patches]
    assert cache.images.shape == (len(patches), 4, 32, 32)
    for i in (0, len(patches) // 2, len(patches) - 1):
        pf = patches[i]
        expected = np.stack([tifffile.imread(pf.bands[b]) for b in BANDS])
        np.testing.assert_array_equal(cache.images[i], expected)
        np.testing.assert_array_equal(cache.masks[i], tifffile.imread(pf.gt) // 255)
    # Plain numpy can read the cache, as the contract says.
    images = np.load(synthetic_cache / IMAGES, mmap_mode="r")
    assert isinstance(images, np.memmap) and images.shape == cache.images.shape
    listed = set(read_csv_names(synthetic_root / TRAIN_DIR / "training_patches_38-cloud_nonempty.csv"))
    assert set(cache.patches.loc[cache.patches["nonempty"], "name"]) == listed
    assert cache.patches["nonempty"].dtype == bool
    assert {"row", "col"} <= set(cache.patches.select_dtypes("integer").columns)


def test_each_row_has_the_sha256_of_its_pixels_and_mask(synthetic_cache, tmp_path):
    cache = open_cache(synthetic_cache)
    assert cache.row_digests.shape == (len(cache), 32) and cache.row_digests.dtype == np.uint8
    for i in (0, len(cache) // 2, len(cache) - 1):
        by_hand = hashlib.sha256(cache.images[i].tobytes() + cache.masks[i].tobytes()).digest()
        assert cache.row_digests[i].tobytes() == by_hand
    assert len({d.tobytes() for d in cache.row_digests}) > 1
    # A cache whose digests are missing or do not fit is corrupt, and says which file.
    broken = Path(shutil.copytree(synthetic_cache, tmp_path / "broken"))
    np.save(broken / ROW_DIGESTS, cache.row_digests[:-1])
    with pytest.raises(DatasetError, match=ROW_DIGESTS):
        open_cache(broken)
    (broken / ROW_DIGESTS).unlink()
    with pytest.raises(DatasetError, match=ROW_DIGESTS):
        open_cache(broken)


def test_second_ingest_reuses_and_a_changed_source_file_invalidates(synthetic_root, copy_tree, tmp_path):
    root = copy_tree(synthetic_root / TRAIN_DIR)
    cache_dir = ingest(root, tmp_path / "cache", progress=False)
    stamp = (cache_dir / IMAGES).stat().st_mtime_ns
    assert ingest(root, cache_dir, progress=False) == cache_dir
    assert (cache_dir / IMAGES).stat().st_mtime_ns == stamp  # reused, not rewritten

    pf = discover_patches(root)[3]
    new_red = np.full((32, 32), 1234, np.uint16)
    tifffile.imwrite(pf.bands["red"], new_red, compression="packbits", metadata=None)
    st = pf.bands["red"].stat()
    os.utime(pf.bands["red"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks
    before = open_cache(cache_dir).row_digests.copy()
    ingest(root, cache_dir, progress=False)
    np.testing.assert_array_equal(open_cache(cache_dir).images[3, 0], new_red)
    changed = np.flatnonzero((open_cache(cache_dir).row_digests != before).any(axis=1))
    assert changed.tolist() == [3]  # only the edited patch's digest moved
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_broken_tree_reports_every_problem_with_its_path_and_leaves_no_cache(
    synthetic_root, copy_tree, tmp_path, processes
):
    root = copy_tree(synthetic_root)
    train = discover_patches(root, subset="train")
    p = [train[i] for i in (1, 5, 9, 13, 17)]
    missing = p[0].bands["nir"]
    missing.unlink()
    truncated = p[1].bands["red"]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    as_float = p[2].bands["green"]
    tifffile.imwrite(as_float, np.ones((32, 32), np.float32), compression="packbits")
    wrong_shape = p[3].bands["blue"]  # its patch's other bands are 32x32: the bands disagree
    tifffile.imwrite(wrong_shape, np.ones((16, 32), np.uint16), compression="packbits")
    bad_gt = p[4].gt
    gt = tifffile.imread(bad_gt)
    gt[0, :3] = 7
    tifffile.imwrite(bad_gt, gt, compression="packbits")
    csv_path = root / TRAIN_DIR / "training_patches_38-Cloud.csv"
    ghost = f"patch_99_9_by_9_{p[0].patch.scene_id}"
    with open(csv_path, "a") as f:
        f.write(ghost + "\n")

    expected = {
        missing: "missing",
        truncated: "truncated",
        as_float: "float32",
        wrong_shape: "16x32",
        bad_gt: "7",
        csv_path: ghost,
    }

    def check(problems):
        by_path = {}
        for problem in problems:
            by_path.setdefault(problem.path, []).append(problem.message)
        assert by_path.keys() == expected.keys()
        for path, needle in expected.items():
            assert any(needle in m for m in by_path[path]), (path, by_path[path])

    check(verify(root, processes=processes))
    cache_dir = tmp_path / "cache"
    with pytest.raises(DatasetError) as err:
        ingest(root, cache_dir, progress=False, processes=processes)
    check(err.value.problems)
    assert all(str(path) in str(err.value) for path in expected)
    assert not cache_dir.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_a_file_problem_found_while_decoding_leaves_no_cache(synthetic_root, copy_tree, tmp_path, processes):
    # Only a decode-time problem (the tree's structure is fine): the temp folder must go too.
    root = copy_tree(synthetic_root / TRAIN_DIR)
    bad = discover_patches(root)[-1].bands["nir"]
    bad.write_bytes(bad.read_bytes()[:200])
    cache_dir = tmp_path / "cache"
    with pytest.raises(DatasetError, match="nir_patch"):
        ingest(root, cache_dir, progress=False, processes=processes)
    assert not cache_dir.exists() and _leftovers(tmp_path) == []


def test_worker_processes_build_the_cache_the_threads_build(synthetic_root, synthetic_cache, tmp_path):
    """Decoding in worker processes (what a large tree gets) writes the same bytes and patch table."""
    threads = open_cache(synthetic_cache)
    cache = open_cache(ingest(synthetic_root, tmp_path / "cache", progress=False, processes=True, workers=3))
    np.testing.assert_array_equal(cache.images, threads.images)
    np.testing.assert_array_equal(cache.masks, threads.masks)
    assert cache.patches.equals(threads.patches)
    assert cache.source == {**threads.source, "root": cache.source["root"]}
    assert _leftovers(tmp_path) == []


def test_a_decoding_process_that_dies_is_an_error_and_leaves_no_cache(synthetic_root, tmp_path, monkeypatch):
    # A worker that exits before answering (here: an "interpreter" that exits at once with status 1).
    monkeypatch.setattr(sys, "executable", shutil.which("false"))
    cache_dir = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="decoding worker process died"):
        ingest(synthetic_root, cache_dir, progress=False, processes=True)
    assert not cache_dir.exists() and _leftovers(tmp_path) == []


def test_test_trees_need_the_explicit_test_subset(synthetic_root, tmp_path):
    test_root = synthetic_root / TEST_DIR
    with pytest.raises(DatasetError, match="subset='test'"):
        ingest(test_root, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()
    cache = open_cache(ingest(test_root, tmp_path / "cache", progress=False, subset="test"))
    assert cache.masks is None and len(cache) == len(discover_patches(test_root))
    assert not (tmp_path / "cache" / "masks.npy").exists()


def test_a_stale_cache_is_replaced_but_a_foreign_folder_is_not(synthetic_root, synthetic_cache, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        ingest(synthetic_root, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    # A cache of another source at the same path is replaced whole.
    cache_dir = ingest(synthetic_root / TEST_DIR, tmp_path / "cache", progress=False, subset="test")
    ingest(synthetic_root, cache_dir, progress=False)
    assert open_cache(cache_dir).source["fingerprint"] == open_cache(synthetic_cache).source["fingerprint"]
    assert _leftovers(tmp_path) == []


def test_concurrent_ingests_of_the_same_tree_both_succeed(synthetic_root, tmp_path):
    cache_dir = tmp_path / "cache"
    errors = []

    def run():
        try:
            ingest(synthetic_root, cache_dir, progress=False, workers=1)
        except Exception as e:  # pragma: no cover - the assertion below shows it
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(open_cache(cache_dir)) == len(discover_patches(synthetic_root, subset="train"))
    assert _leftovers(tmp_path) == []


def test_open_cache_of_a_non_cache_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a harness cache"):
        open_cache(tmp_path)


def test_cache_size_is_computed_from_the_patches():
    # 10 patches of 32x32: 4 uint16 bands (8 bytes a pixel) + a uint8 mask.
    assert cache_bytes(10, (32, 32), has_masks=True) == 10 * 32 * 32 * 9
    assert cache_bytes(10, (32, 32), has_masks=False) == 10 * 32 * 32 * 8


def test_too_little_free_space_is_named_before_anything_is_written(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(DatasetError, match="not enough disk space") as err:
        check_free_space(tmp_path, free + 2**40)
    assert str(tmp_path) in str(err.value.problems[0])
    check_free_space(tmp_path, 1)


def test_ingest_into_a_full_file_system_leaves_nothing(synthetic_root, tmp_path):
    """A real 1 MB tmpfs: the cache and its margin cannot fit; a clear error, no temp folder left."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(DatasetError, match="not enough disk space"):
            ingest(synthetic_root, small / "cache", progress=False)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_cache_path_that_is_a_file_is_refused(synthetic_root, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(FileExistsError, match="is a file"):
        ingest(synthetic_root, tmp_path / "cache", progress=False)


def test_worker_processes_never_rerun_the_callers_main(synthetic_root, tmp_path):
    """An unguarded script (no ``if __name__ == "__main__"``) ingests once: workers do not re-import it."""
    runs = tmp_path / "runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from harness.data.cache import ingest\n"
        f"with open({str(runs)!r}, 'a') as f:\n"
        "    f.write('ran\\n')\n"
        f"ingest({str(synthetic_root)!r}, {str(tmp_path / 'cache')!r}, progress=False, processes=True)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    subprocess.run([sys.executable, str(script)], check=True, env=env, cwd=tmp_path, timeout=300)
    assert runs.read_text() == "ran\n"
    assert len(open_cache(tmp_path / "cache")) == len(discover_patches(synthetic_root, subset="train"))


@pytest.mark.parametrize(
    ("dtype", "options"),
    [
        (np.uint16, {"compression": "packbits"}),  # what 38/95-Cloud and the synthetic trees hold
        (np.uint8, {"compression": "packbits", "rowsperstrip": 5}),  # a ground truth, a short last strip
        (np.uint16, {}),  # uncompressed, one strip
        (np.uint16, {"compression": "packbits", "byteorder": ">"}),  # big-endian
    ],
)
def test_plain_tiffs_are_read_as_tifffile_reads_them(tmp_path, dtype, options):
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(dtype).max, (48, 40), dtype=dtype)
    array[:10] = 0  # runs, so PackBits has something to compress
    path = tmp_path / "band.TIF"
    tifffile.imwrite(path, array, photometric="minisblack", metadata=None, **options)
    read = read_plain_tiff(path, dtype, (48, 40))
    assert read is not None and read.dtype == np.dtype(dtype) and read.dtype.isnative
    np.testing.assert_array_equal(read, tifffile.imread(path))


def test_real_patch_files_are_read_as_tifffile_reads_them(real_sample_root):
    (pf,) = discover_patches(real_sample_root)
    for path in pf.paths():
        dtype = np.uint8 if path == pf.gt else np.uint16
        np.testing.assert_array_equal(read_plain_tiff(path, dtype, (384, 384)), tifffile.imread(path))


@pytest.mark.parametrize(
    "case", ["lzw", "tiled", "float32", "predictor", "other shape", "truncated", "not a tiff", "bigtiff"]
)
def test_other_tiffs_are_left_to_tifffile(tmp_path, case):
    path = tmp_path / "band.TIF"
    array = np.arange(48 * 40, dtype=np.uint16).reshape(48, 40)
    options = {
        "lzw": {"compression": "lzw"},
        "tiled": {"tile": (16, 16)},
        "predictor": {"compression": "zlib", "predictor": True},
        "bigtiff": {"bigtiff": True},
    }.get(case, {})
    tifffile.imwrite(path, array.astype(np.float32) if case == "float32" else array, metadata=None, **options)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    if case == "not a tiff":
        path.write_bytes(b"PNG and more bytes")
    assert read_plain_tiff(path, np.uint16, (40, 48) if case == "other shape" else (48, 40)) is None
