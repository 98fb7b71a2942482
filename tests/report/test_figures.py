"""Tests of harness.report.figures: every figure the report links exists and shows something."""

import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from harness.report import write_report
from harness.report.figures import plot_curves, plot_per_image, plot_samples, render_figures
from harness.results import load_results
from tests.test_results import make_results_dir


def _not_blank(png, min_side=300):
    """Assert that ``png`` is an RGB(A) image larger than ``min_side`` both ways, not one flat colour."""
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > min_side and image.shape[1] > min_side
    assert image[..., :3].std() > 0.05, f"{png} is (nearly) one colour"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """Render one full results directory (every optional file) for the module; return (root, report path)."""
    root = make_results_dir(tmp_path_factory.mktemp("results"))
    return root, write_report(root)


def test_every_linked_figure_exists_and_is_not_blank(full_report):
    root, path = full_report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", path.read_text())
    assert sorted(links) == sorted(f"figures/{n}.png" for n in ("curves", "samples", "per_image_iou", "budget"))
    for link in links:
        png = root / link
        assert png.stat().st_size > 15_000, link
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05, f"{link} is (nearly) one colour"


def test_no_optional_input_means_no_figure(tmp_path):
    res = load_results(make_results_dir(tmp_path / "bare", optional=False))
    assert render_figures(res, tmp_path / "figures") == {}
    assert list((tmp_path / "figures").iterdir()) == []


def test_a_diverged_run_still_gives_readable_curves(tmp_path):
    res = load_results(make_results_dir(tmp_path / "results"))
    curves = res.curves.copy()
    diverged = (curves.arch == "unetpp") & (curves.seed == 0) & (curves.epoch > 5)
    curves.loc[diverged, ["train_loss", "val_loss"]] = [1e6, np.inf]
    png = plot_curves(curves, res.archs, tmp_path / "curves.png")
    _not_blank(png)


def test_samples_accept_uint8_rgb_and_no_per_image_scores(tmp_path):
    res = load_results(make_results_dir(tmp_path / "results"))
    samples = {**res.samples, "rgb": (res.samples["rgb"] * 255).astype(np.uint8)}
    del samples["seed"]
    _not_blank(plot_samples(samples, res.archs, None, tmp_path / "samples.png"), min_side=100)


def test_an_architecture_without_a_display_name_can_be_plotted(tmp_path):
    res = load_results(make_results_dir(tmp_path / "results"))
    per_image = res.per_image.replace({"arch": {"unetpp": "mystery"}})
    paired = res.paired.replace({"arch_b": {"unetpp": "mystery"}})
    _not_blank(plot_per_image(per_image, paired, ["unet", "mystery"], tmp_path / "per_image.png"))


def test_one_architecture_gives_a_per_image_figure_without_pairs(tmp_path):
    res = load_results(make_results_dir(tmp_path / "results"))
    per_image = res.per_image[res.per_image.arch == "unet"]
    _not_blank(plot_per_image(per_image, pd.DataFrame(columns=res.paired.columns), ["unet"], tmp_path / "one.png"))


def test_a_rerender_on_a_full_disk_fails_naming_no_space_and_keeps_the_old_report(small_filesystem, capsys):
    import errno
    import shutil

    from harness.diskspace import no_space_detail
    from tests.conftest import fill

    volume = small_filesystem("vol", 64 << 20)
    root = make_results_dir(volume / "results")
    report = write_report(root)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    shutil.rmtree(root / "figures")  # the re-render has to write every figure again
    (root / "figures").mkdir()
    fill(volume, 16 * 1024)
    with pytest.raises(OSError) as caught:
        write_report(root)
    assert caught.value.errno == errno.ENOSPC and "No space left on device" in no_space_detail(caught.value)
    assert report.read_bytes() == before[report.relative_to(root)]  # the old report.md, whole
    assert report.with_suffix(".html").read_bytes() == before[report.with_suffix(".html").relative_to(root)]
    assert not [p for p in root.rglob(".*tmp-*")]  # no half-written temporary left behind
    from harness.cli import main

    assert main(["report", str(root)]) == 4  # the command: exit 4 and a message, not a traceback
    err = capsys.readouterr().err
    assert "error: no space left on device (" in err and "Traceback" not in err
