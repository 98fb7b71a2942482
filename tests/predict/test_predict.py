"""``cloudmask predict`` on synthetic Landsat-8 scene folders, with a network trained by ``fit``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
import torch

from harness.cli import main
from harness.data.decode import read_patch
from harness.data.layout import discover_patches
from harness.data.synth_landsat import write_landsat_scenes
from harness.predict import CLOUD, NODATA, find_scene, load_model, predict_scene, probability_path
from harness.predict.infer import cloud_probability
from harness.predict.tiling import tile_starts
from harness.training.checkpoints import CHECKPOINT_FILENAME


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    (folder,) = write_landsat_scenes(tmp_path_factory.mktemp("scenes"), scenes=1, seed=3, patch_size=64)
    return folder


def whole_window_probability(network, scene) -> np.ndarray:
    """The network on the whole scene at once (padded to its poolings' multiple): the seamless reference."""
    dn = scene.read(rasterio.windows.Window(0, 0, scene.width, scene.height), network.preprocessing.bands)
    image = network.preprocessing.apply(dn)
    m = 2**network.config.depth
    pad = ((0, 0), (0, -scene.height % m), (0, -scene.width % m))
    return cloud_probability(network.model, np.pad(image, pad)[None], torch.device("cpu"))[0][
        : scene.height, : scene.width
    ]


def tiled_probability(network, scene, out: Path, overlap: int) -> np.ndarray:
    predict_scene(network.model, network.preprocessing, scene, out, tile=64, overlap=overlap, probability=True)
    with rasterio.open(probability_path(out, scene.scene_id)) as src:
        return src.read(1)


def test_tiles_blended_over_their_overlap_leave_no_seams(checkpoint, scene_dir, tmp_path):
    network = load_model(str(checkpoint))
    scene = find_scene(scene_dir, network.preprocessing)
    assert scene.height > 128 and scene.width > 128  # several tiles of 64 px each way
    reference = whole_window_probability(network, scene)
    blended = tiled_probability(network, scene, tmp_path / "blended", overlap=16)
    abutting = tiled_probability(network, scene, tmp_path / "abutting", overlap=0)
    inside = ~np.isnan(blended)
    # The seams: pixels within 4 px of where abutting tiles meet.
    seam = np.zeros(reference.shape, bool)
    for r in tile_starts(scene.height, 64, 0)[1:]:
        seam[r - 4 : r + 4] = True
    for c in tile_starts(scene.width, 64, 0)[1:]:
        seam[:, c - 4 : c + 4] = True
    blend_error, abut_error = np.abs(blended - reference), np.abs(abutting - reference)
    # Abutting tiles differ from the whole-scene pass along their edges (zero padding there); blending over
    # 16 px gives the edge pixels to the neighbour that sees them in context (measured: 0.0234 -> 0.0038).
    assert blend_error[inside & seam].mean() < 0.25 * abut_error[inside & seam].mean()
    assert blend_error[inside].mean() < abut_error[inside].mean()
    assert ((blended > 0.5) == (reference > 0.5))[inside].mean() > 0.95


def test_the_mask_keeps_the_scenes_grid_and_its_nodata(checkpoint, scene_dir, tmp_path):
    assert main(["predict", "--model", str(checkpoint), "--out", str(tmp_path), str(scene_dir), "-q"]) == 0
    (band,) = scene_dir.glob("*_B2.TIF")
    (mask_file,) = tmp_path.glob("*_cloudmask.TIF")
    assert mask_file.name == f"{scene_dir.name}_cloudmask.TIF"
    assert not list(tmp_path.glob(".*partial"))
    with rasterio.open(band) as src, rasterio.open(mask_file) as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        assert out.dtypes == ("uint8",) and out.nodata == NODATA
        mask, dn = out.read(1), src.read(1)
    assert set(np.unique(mask)) <= {0, CLOUD, NODATA}
    assert np.array_equal(mask == NODATA, dn == 0)  # nodata exactly where the scene has no data (QA's fill)
    # The mask is the thresholded cloud probability (0.5: the argmax the harness scores).
    assert (
        main(["predict", "--model", str(checkpoint), "--out", str(tmp_path), "--probability", str(scene_dir), "-q"])
        == 0
    )
    with rasterio.open(probability_path(tmp_path, scene_dir.name)) as src:
        prob = src.read(1)
    assert np.array_equal(np.isnan(prob), dn == 0)
    assert np.array_equal((mask == CLOUD)[dn > 0], (prob > 0.5)[dn > 0])


def with_quality_band(scene_dir: Path, folder: Path, qa: np.ndarray | None, name: str = "QA_PIXEL") -> Path:
    """A copy of the scene whose quality band is ``qa`` (uint16) under ``<ID>_<name>.TIF``; None: no quality band."""
    shutil.copytree(scene_dir, folder)
    (original,) = folder.glob("*_QA_PIXEL.TIF")
    original.unlink()
    if qa is not None:
        with rasterio.open(next(folder.glob("*_B2.TIF"))) as src:
            profile = src.profile | {"dtype": str(qa.dtype)}
        with rasterio.open(folder / f"{folder.name}_{name}.TIF", "w", **profile) as dst:
            dst.write(qa, 1)
    return folder


def masked(checkpoint, folder: Path, out: Path, capsys) -> np.ndarray:
    assert main(["predict", "--model", str(checkpoint), "--out", str(out), str(folder), "-q"]) == 0
    qa = sorted(folder.glob("*_QA_PIXEL.TIF")) or sorted(folder.glob("*_BQA.TIF"))
    told = f"fill from {qa[0].name}" if qa else "fill where every band is 0 (no quality band)"
    assert f"{folder.name}: {out / folder.name}_cloudmask.TIF ({told})" in capsys.readouterr().out
    with rasterio.open(out / f"{folder.name}_cloudmask.TIF") as src:
        return src.read(1)


def test_the_quality_bands_fill_bit_decides_the_nodata(checkpoint, scene_dir, tmp_path, capsys):
    """USGS's fill bit (bit 0 of QA_PIXEL or of Collection 1's BQA) is the footprint; without it, the bands' zeros."""
    with rasterio.open(next(scene_dir.glob("*_B2.TIF"))) as src:
        inside = src.read(1) > 0
    h, w = inside.shape
    # Fill claimed over a block of real data, and a clear pixel whose other bits are set (Collection 2 writes
    # 21824 for "clear, low confidences"): only bit 0 counts.
    qa = np.where(inside, 21824, 1).astype(np.uint16)
    block = (slice(h // 3, h // 2), slice(w // 3, w // 2))
    assert inside[block].all()
    qa[block] = 1 | 2**3  # fill, whatever else is set
    expected = ~inside
    expected[block] = True
    for name in ("QA_PIXEL", "BQA"):
        folder = with_quality_band(scene_dir, tmp_path / name / scene_dir.name, qa, name)
        assert find_scene(folder, load_model(str(checkpoint)).preprocessing).qa.name == f"{folder.name}_{name}.TIF"
        mask = masked(checkpoint, folder, tmp_path / f"out-{name}", capsys)
        assert np.array_equal(mask == NODATA, expected)
    # Without a quality band, a pixel is fill when it is 0 in every band: the block is masked again.
    bare = with_quality_band(scene_dir, tmp_path / "bare" / scene_dir.name, None)
    assert find_scene(bare, load_model(str(checkpoint)).preprocessing).qa is None
    assert np.array_equal(masked(checkpoint, bare, tmp_path / "out-bare", capsys) == NODATA, ~inside)


def test_a_bad_quality_band_or_a_level2_scene_is_refused_naming_the_file(checkpoint, scene_dir, tmp_path, capsys):
    with rasterio.open(next(scene_dir.glob("*_B2.TIF"))) as src:
        h, w = src.shape
    eight_bit = with_quality_band(scene_dir, tmp_path / "u8" / scene_dir.name, np.zeros((h, w), np.uint8))
    assert main(["predict", "--model", str(checkpoint), "--out", str(tmp_path / "out"), str(eight_bit)]) == 3
    err = capsys.readouterr().err
    assert f"{eight_bit}/{scene_dir.name}_QA_PIXEL.TIF: expected one uint16 band (the scene's bit-packed" in err
    cropped = tmp_path / "cropped" / scene_dir.name
    shutil.copytree(scene_dir, cropped)
    with rasterio.open(next(cropped.glob("*_B2.TIF"))) as src:
        profile = src.profile | {"height": h - 8}
    with rasterio.open(cropped / f"{scene_dir.name}_QA_PIXEL.TIF", "w", **profile) as dst:
        dst.write(np.zeros((h - 8, w), np.uint16), 1)
    assert main(["predict", "--model", str(checkpoint), "--out", str(tmp_path / "out"), str(cropped)]) == 3
    assert f"{cropped / scene_dir.name}_QA_PIXEL.TIF: its size, CRS or transform differs" in capsys.readouterr().err
    # A Level-2 download: <ID>_SR_B2.TIF ... (surface reflectance), not the Level-1 digital numbers it learnt.
    level2 = tmp_path / "level2" / "LC08_L2SP_002054_20160520_20200907_02_T1"
    level2.mkdir(parents=True)
    for band in scene_dir.glob("*_B?.TIF"):
        shutil.copy(band, level2 / f"{level2.name}_SR_{band.name.rsplit('_', 1)[1]}")
    assert main(["predict", "--model", str(checkpoint), "--out", str(tmp_path / "out"), str(level2)]) == 3
    assert "SR_B4.TIF: a Level-2 surface-reflectance band; the network was trained on Level-1" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_refused_naming_the_file_before_any_scene_is_masked(checkpoint, scene_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(scene_dir, broken)
    (b5,) = broken.glob("*_B5.TIF")
    b5.unlink()
    args = ["predict", "--model", str(checkpoint), "--out", str(tmp_path / "out"), str(scene_dir), str(broken)]
    assert main(args) == 3
    assert f"{broken}: expected one Landsat-8 scene with bands B4, B3, B2, B5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # the good scene was not masked either: every input is checked first
    with rasterio.open(next(scene_dir.glob("*_B2.TIF"))) as src:
        profile = src.profile
    with rasterio.open(b5, "w", **{**profile, "dtype": "uint8"}) as dst:
        dst.write(np.zeros((profile["height"], profile["width"]), np.uint8), 1)
    assert main(args) == 3
    assert f"{b5}: expected one uint16 band" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path), str(scene_dir)]) == 3
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["predict", "--model", str(checkpoint), "--tile", "66", "--out", str(tmp_path), str(scene_dir)]) == 3
    assert "multiple of 4" in capsys.readouterr().err


def test_a_model_logged_by_the_comparison_predicts_from_its_mlflow_uri(checkpoint, scene_dir, tmp_path, capsys):
    """The retrain's logged model carries its preprocessing: `runs:/` gives the checkpoint's masks exactly."""
    from harness.compare.driver import model_metadata
    from harness.results import RetrainResult
    from harness.tracking import ComparisonRecorder
    from harness.training.checkpoints import checkpoint_config, load_checkpoint

    stored = load_checkpoint(checkpoint / CHECKPOINT_FILENAME)
    network = load_model(str(checkpoint))
    empty = np.zeros((0, 4), np.int64)
    retrain = RetrainResult(
        checkpoint_config(stored), "completed", [], empty, empty[:, 0], empty[:, 0], np.zeros((0, 1, 1), np.uint8),
        [], 1.0, 1.0, "cpu", band_stats=stored["band_stats"],
    )  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = ComparisonRecorder(uri, "predict-test", sweep_id="s1", tags={})
    recorder.start({})
    (tmp_path / "art").mkdir()
    run_id = recorder.log_retrain(
        run_name="unet/seed1", tags={"arch": "unet", "seed": "1"}, params={}, history=[], test_metrics={},
        artifacts_dir=tmp_path / "art", model=network.model, input_example=np.zeros((2, 4, 32, 32), np.float32),
        model_metadata=model_metadata(retrain),
    )  # fmt: skip
    out_uri, out_ckpt = tmp_path / "from-uri", tmp_path / "from-checkpoint"
    # Tiles of another size and batch than the logged input example's: the exported network takes any.
    tiling = ["--tile", "64", "--overlap", "16", "--batch-size", "3", str(scene_dir), "-q"]
    args = ["--out", str(out_uri), "--tracking-uri", uri, *tiling]
    assert main(["predict", "--model", f"runs:/{run_id}/unet-seed1", *args]) == 0
    assert main(["predict", "--model", str(checkpoint), "--out", str(out_ckpt), *tiling]) == 0
    with rasterio.open(next(out_uri.glob("*.TIF"))) as a, rasterio.open(next(out_ckpt.glob("*.TIF"))) as b:
        assert np.array_equal(a.read(1), b.read(1))
    assert main(["predict", "--model", f"runs:/{'0' * 32}/unet-seed1", *args]) == 3
    assert "MLflow cannot load it" in capsys.readouterr().err


def test_a_patch_tree_gets_one_mask_per_patch(checkpoint, synthetic_root, tmp_path):
    patches = discover_patches(synthetic_root)
    assert main(["predict", "--model", str(checkpoint), "--out", str(tmp_path), str(synthetic_root), "-q"]) == 0
    written = sorted(tmp_path.glob("patch_*_cloudmask.TIF"))
    assert len(written) == len(patches)
    network = load_model(str(checkpoint))
    first = patches[0]
    image, _, _ = read_patch(first, (32, 32))
    prob = cloud_probability(network.model, network.preprocessing.apply(image)[None], torch.device("cpu"))[0]
    mask = tifffile.imread(tmp_path / f"{first.patch.name}_cloudmask.TIF")
    expected = np.where(image.any(axis=0), np.where(prob > 0.5, CLOUD, 0), NODATA)
    assert np.array_equal(mask, expected)
