"""Command line: `python -m harness.data {synth,verify,ingest,split,preview} ...` (see docs/data.md).

Exit status (as every `cloudmask` command): 0 on success, 2 on bad command-line usage, 3 on bad input:
data with problems (each printed as `path: problem`) or an invalid value (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.diskspace import no_space_detail
from harness.errors import InputError

from .cache import ingest, open_cache, verify
from .layout import BANDS, DatasetError, Problem, discover_patches
from .prepare import manifest_name
from .splits import KINDS, check_fractions, make_split, write_manifest
from .synth import write_synthetic_dataset

EXIT_BAD_INPUT, EXIT_RUNTIME = 3, 4


def _print_problems(problems: list[Problem], what: str) -> None:
    for p in problems:
        print(p)
    patches = len({p.path for p in problems})
    print(f"{what}: {len(problems)} problem(s) in {patches} file(s)", file=sys.stderr)


def _cmd_synth(a: argparse.Namespace) -> int:
    if a.layout == "landsat":
        from .synth_landsat import write_landsat_scenes

        folders = write_landsat_scenes(a.out, scenes=a.scenes or 1, seed=a.seed, patch_size=a.patch_size)
        for folder in folders:
            print(f"wrote scene {folder}")
        return 0
    test_only = a.layout == "38-cloud-test"
    out = write_synthetic_dataset(
        a.out,
        scenes=0 if test_only else (a.scenes or 6),
        patch_size=a.patch_size,
        seed=a.seed,
        test_scenes=(a.scenes or 2) if test_only else a.test_scenes,
        additional_scenes=a.additional_scenes,
    )
    n = len(discover_patches(out))
    print(f"wrote {n} patches under {out}")
    return 0


def _cmd_verify(a: argparse.Namespace) -> int:
    problems = verify(a.root, subset=a.subset, workers=a.workers, progress=not a.quiet)
    if problems:
        _print_problems(problems, f"verify {a.root}")
        return EXIT_BAD_INPUT
    print(f"ok: {len(discover_patches(a.root, subset=a.subset))} patches complete and readable")
    return 0


def _cmd_ingest(a: argparse.Namespace) -> int:
    try:
        cache_dir = ingest(a.root, a.cache, workers=a.workers, progress=not a.quiet, subset=a.subset)
    except DatasetError as e:
        _print_problems(e.problems, f"ingest {a.root}")
        return EXIT_BAD_INPUT
    cache = open_cache(cache_dir)
    nonempty = int(cache.patches["nonempty"].sum())
    print(f"cache {cache_dir}: {len(cache)} patches of {cache.patch_size}px ({nonempty} non-empty)")
    return 0


def _cmd_split(a: argparse.Namespace) -> int:
    fractions = check_fractions([float(v) for v in a.fractions.split(",")])
    cache = open_cache(a.cache)
    manifest = make_split(cache.patches, kind=a.kind, fractions=fractions, seed=a.seed, nonempty_only=a.nonempty_only)
    out = Path(a.out) if a.out else Path(a.cache) / manifest_name(a.kind, fractions, a.seed, a.nonempty_only)
    digest = write_manifest(manifest, out)
    counts = manifest["split"].value_counts()
    print(f"{out}  sha256 {digest}  " + " ".join(f"{s}={counts.get(s, 0)}" for s in ("train", "val", "test")))
    return 0


def render_preview(root: str | Path, out: str | Path, *, patches: int = 4, seed: int = 0) -> Path:
    """Save a PNG: a few non-empty patches (true colour | gt | NIR) and one whole scene, stitched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import tifffile

    found = [p for p in discover_patches(root) if len(p.bands) == len(BANDS)]
    with_gt = [p for p in found if p.gt is not None]
    found = with_gt or found  # show ground truth when the tree has any (test trees have none)
    if not found:
        raise DatasetError([Problem(Path(root), "no complete patches to preview")])

    def load(pf):
        bands = np.stack([tifffile.imread(pf.bands[b]) for b in BANDS]).astype(np.float32)
        gt = tifffile.imread(pf.gt) if pf.gt is not None else np.zeros(bands.shape[1:], np.uint8)
        return bands, gt

    def rgb(b):  # one fixed stretch for every image, so synthetic and real data compare directly
        return np.clip((np.moveaxis(b[:3], 0, -1) - 5000) / 25000, 0, 1) ** 0.8

    def nir(b):
        return np.clip((b[3] - 4000) / 36000, 0, 1)

    rng = np.random.default_rng(seed)
    full = [p for p in found if (tifffile.imread(p.bands["red"]) > 0).mean() > 0.99]
    chosen = [full[i] for i in sorted(rng.choice(len(full), min(patches, len(full)), replace=False))]
    scene_id = (chosen or found)[0].patch.scene_id
    scene = [p for p in found if p.patch.scene_id == scene_id]
    px = load(scene[0])[0].shape[-1]
    rows, cols = max(p.patch.row for p in scene), max(p.patch.col for p in scene)
    canvas = np.zeros((4, rows * px, cols * px), np.float32)
    gts = np.zeros((rows * px, cols * px), np.uint8)
    for p in scene:
        b, g = load(p)
        ys, xs = slice((p.patch.row - 1) * px, p.patch.row * px), slice((p.patch.col - 1) * px, p.patch.col * px)
        canvas[:, ys, xs], gts[ys, xs] = b, g

    n = len(chosen) + 1
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for ax_row, (title, (b, g)) in zip(
        axes, [(f"scene {scene_id}", (canvas, gts)), *((p.name, load(p)) for p in chosen)], strict=True
    ):
        ax_row[0].imshow(rgb(b))
        ax_row[1].imshow(g, cmap="gray", vmin=0, vmax=max(1, int(g.max())))
        ax_row[2].imshow(nir(b), cmap="gray", vmin=0, vmax=1)
        ax_row[0].set_title(title, fontsize=7, loc="left")
        for ax in ax_row:
            ax.set_axis_off()
    axes[0, 1].set_title("ground truth", fontsize=8)
    axes[0, 2].set_title("NIR", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _cmd_preview(a: argparse.Namespace) -> int:
    print(render_preview(a.root, a.out, patches=a.patches, seed=a.seed))
    return 0


def build_parser(prog: str = "python -m harness.data") -> argparse.ArgumentParser:
    """The argument parser of `python -m harness.data` (and `cloudmask data`)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in the 38-Cloud layout, or Landsat-8 scene folders")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument(
        "--layout",
        choices=("38-cloud", "38-cloud-test", "landsat"),
        default="38-cloud",
        help="38-cloud: patch trees (default); 38-cloud-test: a 38-Cloud_test/ tree alone (test bands and "
        "Entire_scene_gts/, --scenes of them, default 2: what `cloudmask evaluate` scores); landsat: scene "
        "folders <ID>/<ID>_B2.TIF ... _B5.TIF, <ID>_QA_PIXEL.TIF and <ID>_GT.TIF "
        "(GeoTIFF, EPSG:32617, a fill border: QA bit 0), what `cloudmask predict` reads",
    )
    p.add_argument("--scenes", type=int, default=None, help="training scenes (default 6; landsat: scene folders, 1)")
    p.add_argument(
        "--patch-size", type=int, default=64, help="patch side in pixels (default 64; landsat: scenes are 3-4 patches)"
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--test-scenes", type=int, default=None, help="scenes in 38-Cloud_test (default scenes // 3)")
    p.add_argument("--additional-scenes", type=int, default=0, help="scenes in a 95-Cloud additional tree")
    p.set_defaults(func=_cmd_synth)

    for name, helptext in (("verify", "check every patch file"), ("ingest", "pack a tree into a .npy cache")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument(
            "--data", "--root", dest="root", required=True, help="dataset root (38-Cloud and/or 95-Cloud folders)"
        )
        if name == "ingest":
            p.add_argument("--cache", required=True, help="cache folder to create (or reuse)")
        p.add_argument("--workers", type=int, default=None, help="decoding threads")
        p.add_argument(
            "--subset",
            choices=("train", "test"),
            default="train" if name == "ingest" else None,
            help="training or test patches"
            + (" (default train; test has no masks)" if name == "ingest" else " (default both)"),
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=_cmd_verify if name == "verify" else _cmd_ingest)

    p = sub.add_parser("split", help="write a seeded split manifest for a cache and print its sha256")
    p.add_argument("--cache", required=True, help="cache folder written by ingest")
    p.add_argument("--kind", choices=KINDS, default="scene", help="group by scene (default) or split patches")
    p.add_argument("--fractions", default="0.6,0.2,0.2", help="train,val,test (default 0.6,0.2,0.2)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--nonempty-only", action="store_true", help="leave out patches under 80 %% non-zero pixels")
    p.add_argument("--out", default=None, help="manifest path (default: inside the cache folder)")
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser("preview", help="save a PNG of a few patches and one scene (true colour | gt | NIR)")
    p.add_argument("--data", "--root", dest="root", required=True, help="dataset root")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--patches", type=int, default=4, help="how many patches beside the scene (default 4)")
    p.add_argument("--seed", type=int, default=0, help="which patches are picked (default 0)")
    p.set_defaults(func=_cmd_preview)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m harness.data") -> int:
    """Run the command line; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except (InputError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatasetError as e:
        _print_problems(e.problems, str(e).splitlines()[0])
        return EXIT_BAD_INPUT
    except OSError as e:
        detail = no_space_detail(e)
        if detail is None:
            raise
        # A disk that filled up after the up-front check (another writer): the staging folder is gone.
        print(f"error: no space left on device ({detail}); free space and run the command again", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
