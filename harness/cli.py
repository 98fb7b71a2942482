"""``cloudmask``: the harness's commands (sweep, compare, report, replay, demo, predict, evaluate, data).

The ``python -m harness.sweep`` / ``harness.final_compare`` / ``harness.demo`` / ``harness.data`` /
``harness.report`` / ``harness.replay`` forms run the same subcommands. Options shared by the subcommands that take a
benchmark (``--data``, ``--tracking-uri``, ``--storage``, ``--address``, ``--set``) mean the same everywhere.

Exit codes: 0 success; 2 bad command-line usage (argparse); 3 bad input (a benchmark file, override,
search space, dataset or results directory that is invalid, or a sweep ``replay`` cannot use; the message
names the key, file or trials);
4 a runtime failure (tracking store, Ray cluster, sweep state or comparison that cannot go on), or a bug
(any exception that is not one of :mod:`harness.errors`: printed with its traceback);
130 / 143 a sweep stopped by Ctrl-C (SIGINT) / SIGTERM: its state is saved, ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import secrets
import sys
import time
import traceback
from pathlib import Path

from harness.diskspace import no_space_detail
from harness.errors import InputError, RunError, SweepInterrupted

EXIT_OK, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_RUNTIME = 0, 2, 3, 4
EXIT_CODES = (
    "exit codes: 0 ok; 2 usage; 3 bad input (names the key or file; also output that would not fit in the "
    "free space where it goes: object stores are not checked); 4 runtime failure (incl. an architecture "
    "with no trial that ran every epoch, trials Tune left unfinished, a disk that filled up; a bug prints its "
    "traceback); 130/143 "
    "sweep stopped by "
    "Ctrl-C/SIGTERM (resumable with --resume)"
)
DEMO_BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "demo.yaml"


def _benchmark_options(p: argparse.ArgumentParser, *, benchmark_optional: bool = False) -> None:
    """The options every benchmark-taking subcommand shares."""
    if benchmark_optional:
        p.add_argument(
            "benchmark", nargs="?", help="benchmark YAML (default: the latest finished sweep in the tracking store)"
        )
    else:
        p.add_argument("benchmark", help="benchmark YAML file, e.g. benchmarks/smoke.yaml")
    p.add_argument("--data", help="dataset root (a 38-Cloud/95-Cloud tree); replaces the benchmark's data section")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the benchmark's tracking.uri)")
    p.add_argument(
        "--storage",
        help="sweep storage: a local folder, a shared path, or an s3:// or gs:// URI. On a path the sweep first "
        "checks that what it will write fits (exit 3 if not) and stops cleanly when the disk nearly fills "
        "(exit 4, resumable); object stores report no free space and are not checked",
    )
    _cluster_and_override_options(p)


def _cluster_and_override_options(p: argparse.ArgumentParser) -> None:
    """``--address`` and ``--set``, the same in every command that runs on Ray."""
    p.add_argument("--address", help="Ray cluster address to join (default: start a private local Ray instance)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        type=override_argument,
        metavar="KEY=VALUE",
        help="override a benchmark key, e.g. --set train.epochs=2 (repeatable)",
    )


def override_argument(text: str) -> str:
    """``--set``'s type: a malformed override is a usage error (exit 2), before any file is read."""
    from harness.config.benchmark import parse_override

    try:
        parse_override(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def verbosity_options() -> argparse.ArgumentParser:
    """``-q/--quiet`` and ``-v/--verbose``, the same on every subcommand (:mod:`harness.console`)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print only the closing summary and errors (no progress)"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the trial table at every report, Tune's trial messages and every library's INFO log",
    )
    return parent


def verbosity_of(args: argparse.Namespace) -> int:
    """The console verbosity the parsed options ask for."""
    from harness.console import NORMAL, QUIET, VERBOSE

    return QUIET if getattr(args, "quiet", False) else VERBOSE if getattr(args, "verbose", False) else NORMAL


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloudmask-harness")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The ``cloudmask`` argument parser with every subcommand."""
    # The module docstring's first line, without its reStructuredText quoting (help is plain text).
    description = __doc__.splitlines()[0].replace("``", "")
    parser = argparse.ArgumentParser(prog="cloudmask", description=description, epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"cloudmask-harness {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        # Every subcommand's help ends with one example and the exit codes; each takes --quiet/--verbose.
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example: {example}\n\n{EXIT_CODES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[verbosity_options()],
        )

    p = command(
        "sweep",
        "tune every architecture with the same budget (Ray Tune + Optuna + ASHA)",
        "cloudmask sweep benchmarks/smoke.yaml --storage runs/smoke",
    )
    _benchmark_options(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep found in --storage (refused if the benchmark changed what it measures)",
    )

    p = command(
        "compare",
        "retrain each sweep's chosen config over paired seeds and compare them",
        "cloudmask compare benchmarks/smoke.yaml --out runs/smoke/report",
    )
    _benchmark_options(p, benchmark_optional=True)
    p.add_argument(
        "--out",
        help="results/report folder (default: runs/<benchmark>/final_compare); refused before any retrain "
        "(exit 3) when the results would not fit its disk",
    )
    p.add_argument("--sweep-id", help="compare this sweep instead of the benchmark's latest finished one")
    p.add_argument(
        "--register",
        metavar="NAME",
        help="register each architecture's best retrain (highest mean per-image test IoU of its seeds) in the MLflow "
        "model registry as NAME-<arch>, with its preprocessing and test scores: `cloudmask predict --model "
        "models:/NAME-unet/1`",
    )

    p = command(
        "report",
        "re-render a results folder's report.md and figures (no retraining)",
        "cloudmask report runs/smoke/report",
    )
    p.add_argument("results_dir", help="a results folder written by `cloudmask compare`")

    p = command("demo", "synthetic data -> a sweep of both architectures -> the final comparison", "cloudmask demo")
    # Positional as in every other command; --benchmark, the former spelling, is still read.
    p.add_argument("benchmark", nargs="?", help="benchmark file (default: benchmarks/demo.yaml)")
    p.add_argument("--benchmark", dest="benchmark_option", help=argparse.SUPPRESS)
    _cluster_and_override_options(p)

    p = command(
        "replay",
        "replay ASHA schedules over a finished full-length sweep's curves (no training)",
        "cloudmask replay benchmarks/smoke.yaml --grace-periods 1,2",
    )
    p.add_argument("benchmark", nargs="?", help="benchmark YAML whose sweep to replay (default: the latest sweep)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the benchmark's, else sqlite:///mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment (default: the benchmark's, else the latest sweep's)")
    p.add_argument("--sweep-id", help="replay this sweep instead of the latest finished one")
    p.add_argument("--grace-periods", type=_numbers, help="comma-separated epochs (default: 1,2,4,...)")
    p.add_argument("--reduction-factors", type=_numbers, default=[2, 3, 4], help="comma-separated (default: 2,3,4)")
    p.add_argument("--orders", type=int, default=200, help="random arrival orders replayed per schedule (default: 200)")
    p.add_argument("--concurrency", type=int, help="trials at a time (default: the sweep's search.max_concurrent)")
    p.add_argument(
        "--timing",
        choices=("recorded", "equal"),
        default="recorded",
        help="epoch durations that order the results: each trial's recorded epoch_seconds (default), or all equal",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random arrival orders (default: 0)")
    p.add_argument("--out", help="summary CSV (default: replay-<sweep id>.csv); per-order rows go to <out>-runs.csv")

    p = command(
        "predict",
        "mask whole Landsat-8 scenes with a trained network (GeoTIFF masks with the input's CRS and transform)",
        "cloudmask predict --model runs/smoke/report/retrain/unet-seed1 --out masks LC08_L1TP_..._T1/",
    )
    p.add_argument(
        "scenes",
        nargs="+",
        metavar="INPUT",
        help="Landsat-8 scene folders (*_B2.TIF ... *_B5.TIF), or 38-Cloud/95-Cloud patch trees (one mask per patch)",
    )
    p.add_argument(
        "--model",
        required=True,
        help="a harness checkpoint (checkpoint.pt or a folder holding one), or an MLflow model URI: runs:/<run id>/"
        "<name> or models:/<name>/<version> (a retrain of `cloudmask compare`)",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ (default: sqlite:///mlflow.db)")
    p.add_argument("--out", required=True, help="output folder: <ID>_cloudmask.TIF (0 clear, 255 cloud, 128 nodata)")
    p.add_argument("--probability", action="store_true", help="also write <ID>_cloudprob.TIF (float32, NaN nodata)")
    p.add_argument("--tile", type=int, default=384, help="tile side in pixels (default 384, the training patches')")
    p.add_argument("--overlap", type=int, default=64, help="pixels tiles share on each side (default 64)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1 ...")

    p = command(
        "evaluate",
        "score a network on a 38-Cloud test tree by the dataset's official protocol (stitched scenes, 12/255)",
        "cloudmask evaluate --model runs:/<run id>/unet-seed1 --data /data/38cloud --json scores.json",
    )
    p.add_argument(
        "--model", required=True, help="a harness checkpoint (or folder holding one), or an MLflow model URI"
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ (default: sqlite:///mlflow.db)")
    p.add_argument("--data", required=True, help="a folder holding 38-Cloud_test/ (test bands and Entire_scene_gts/)")
    p.add_argument("--json", help="write {protocol, per_scene, mean} there (scores x100)")
    p.add_argument(
        "--threshold",
        type=float,
        default=12 / 255,
        help="cloud where the 8-bit-saved probability exceeds this (default 12/255, the official rule; 0.5 is the "
        "argmax the harness trains for). A changed threshold is stamped in the protocol",
    )
    p.add_argument("--batch-size", type=int, default=16, help="patches per forward pass (default 16)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1 ...")

    p = command(
        "models",
        "list the registered architectures: family, parameters and GFLOPs per patch at their published shape",
        "cloudmask models --patch-size 384",
    )
    p.add_argument("--patch-size", type=int, default=384, help="patch side the FLOPs are counted for (default 384)")
    p.add_argument("--json", help="also write the rows there as JSON")

    p = sub.add_parser("data", help="dataset tools: synth, verify, ingest, split, preview (see `cloudmask data -h`)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the data command")
    return parser


def load_with_cli(args: argparse.Namespace):
    """The benchmark named on the command line with the shared options applied as overrides."""
    from harness.config import load_benchmark

    overrides = list(args.set)
    if getattr(args, "data", None):
        overrides += [f"data.root={args.data}", "data.synthetic=null"]
    if getattr(args, "tracking_uri", None):
        overrides.append(f"tracking.uri={args.tracking_uri}")
    if getattr(args, "storage", None):
        overrides.append(f"storage={args.storage}")
    return load_benchmark(args.benchmark, overrides)


def _sweep(args: argparse.Namespace) -> int:
    from harness.sweep.driver import run_sweep

    bench = load_with_cli(args)
    results = run_sweep(bench, address=args.address, resume=args.resume)
    _print_sweep_summary(results, bench, benchmark_file=args.benchmark)
    return EXIT_OK


def _print_sweep_summary(results, bench, benchmark_file: str | None) -> None:
    from harness.console import summary
    from harness.sweep.storage import SweepStorage
    from harness.sweep.summary import sweep_summary

    study_storage = bench.search.study_database or SweepStorage.parse(bench.storage).study_storage()
    text = sweep_summary(
        results, bench, study_storage=study_storage, runs_view=_runs_view(bench), benchmark_file=benchmark_file
    )
    summary(text)


def _print_compare_summary(report: Path, bench, seconds: float) -> None:
    from harness.console import summary
    from harness.report.verdict import compare_summary
    from harness.results import load_results

    text = compare_summary(load_results(report.parent), report=str(report.resolve()), runs_view=_runs_view(bench))
    summary(f"{text}\n  ({seconds:.0f} s)")


def _runs_view(bench) -> str:
    from harness.tracking import resolve_uri, runs_view

    return runs_view(resolve_uri(bench.tracking.uri), bench.tracking.experiment)


def _compare(args: argparse.Namespace) -> int:
    from harness.compare.driver import load_sweep_results, resolve_benchmark, run_compare
    from harness.errors import ConfigError

    if not args.benchmark and args.set:
        raise ConfigError("--set needs a benchmark file to override")
    bench = resolve_benchmark(load_with_cli(args) if args.benchmark else None, args.tracking_uri)
    if args.data:
        bench = dataclasses.replace(
            bench, data=dataclasses.replace(bench.data, root=str(Path(args.data).resolve()), synthetic=None)
        )
    if args.register:
        bench = dataclasses.replace(bench, compare=dataclasses.replace(bench.compare, register_models=args.register))
    sweeps = load_sweep_results(bench, args.sweep_id)
    out = Path(args.out or f"runs/{bench.name}/final_compare")
    started = time.monotonic()
    report = run_compare(bench, sweeps, out, address=args.address, progress=verbosity_of(args) > 0)
    _print_compare_summary(report, bench, time.monotonic() - started)
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    from harness.console import summary, verbosity
    from harness.errors import ConfigError
    from harness.predict import load_model, predict_scene
    from harness.predict.patches import predict_patches
    from harness.training.loop import resolve_device

    device = resolve_device(args.device)
    network = load_model(args.model, device, tracking_uri=args.tracking_uri)
    network.check_tile(args.tile)
    if not 0 <= args.overlap < args.tile // 2:
        raise ConfigError(f"--overlap {args.overlap}: expected 0 <= overlap < tile / 2 ({args.tile // 2})")
    inputs = [_prediction_input(folder, network.preprocessing) for folder in args.scenes]  # all checked first
    for folder, item in zip(args.scenes, inputs, strict=True):
        if isinstance(item, list):  # a 38-Cloud/95-Cloud patch tree: one mask per patch
            paths = predict_patches(
                network, item, Path(args.out), device=device, batch_size=args.batch_size, progress=verbosity() > 0
            )
            summary(f"{folder}: {len(paths)} patch masks in {Path(args.out)}")
            continue
        path = predict_scene(
            network.model,
            network.preprocessing,
            item,
            Path(args.out),
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            device=device,
            probability=args.probability,
            progress=verbosity() > 0,
        )
        footprint = f"fill from {item.qa.name}" if item.qa else "fill where every band is 0 (no quality band)"
        summary(f"{item.scene_id}: {path} ({footprint})")
    return EXIT_OK


def _prediction_input(folder: str, preprocessing):
    """A Landsat-8 scene folder's :class:`LandsatScene`, or the patches of a 38-Cloud/95-Cloud tree."""
    from harness.errors import InputError
    from harness.predict import find_scene
    from harness.predict.patches import find_patches

    try:
        return find_scene(folder, preprocessing)
    except InputError as not_a_scene:
        patches = find_patches(folder) if Path(folder).is_dir() else []
        if patches:
            return patches
        raise InputError(f"{not_a_scene}; nor is it a 38-Cloud/95-Cloud patch tree (no *_red/ ... folders)") from None


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from harness.console import summary, table, verbosity
    from harness.diskspace import write_atomically
    from harness.errors import ConfigError
    from harness.predict import load_model
    from harness.predict.evaluate import SCORES, evaluate_tree, network_probability
    from harness.training.loop import resolve_device

    device = resolve_device(args.device)
    network = load_model(args.model, device, tracking_uri=args.tracking_uri)
    if not 0 < args.threshold < 1:
        raise ConfigError(f"--threshold {args.threshold}: expected a probability in (0, 1)")
    probability_of = network_probability(network, device, args.batch_size)
    scores = evaluate_tree(args.data, probability_of, threshold=args.threshold, progress=verbosity() > 0)
    if args.json:
        write_atomically(Path(args.json), json.dumps(scores, indent=2))
    rows = [*scores["per_scene"], {"scene_id": f"mean of {scores['mean']['scenes']} scenes", **scores["mean"]}]
    summary(f"{scores['protocol']['name']} ({scores['protocol']['probability']}; x100 per scene):")
    summary(table(rows, ["scene_id", *SCORES]))
    return EXIT_OK


def _models(args: argparse.Namespace) -> int:
    import json

    from harness.console import summary, table
    from harness.diskspace import write_atomically
    from harness.errors import ConfigError
    from harness.models import list_models, model_costs

    if args.patch_size < 32 or args.patch_size % 32:
        raise ConfigError(f"--patch-size {args.patch_size}: expected a multiple of 32 (every depth divides it)")
    rows = [model_costs(arch, patch_size=args.patch_size) for arch in list_models()]
    if args.json:
        write_atomically(Path(args.json), json.dumps(rows, indent=2))
    shown = [
        {**r, "params (M)": f"{r['params_m']:.2f}", f"GFLOPs/{args.patch_size} px": f"{r['gflops']:.1f}"} for r in rows
    ]
    summary(
        table(shown, ["name", "label", "family", "reference", "params (M)", f"GFLOPs/{args.patch_size} px", "encoders"])
    )
    summary(
        f"{len(rows)} architectures; FLOPs of one {args.patch_size} px patch with 4 bands (a multiply-add is 2), "
        "at the reference shape (the paper's or the library's defaults); a benchmark's search space picks the "
        "shapes it tunes."
    )
    return EXIT_OK


def _numbers(text: str) -> list[float]:
    """A comma-separated list of positive numbers (an option value), e.g. ``1,2,4``."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return [int(v) if v.is_integer() else v for v in values]


def _replay(args: argparse.Namespace) -> int:
    from harness.audit.command import replay_command

    return replay_command(args)


def _report(args: argparse.Namespace) -> int:
    from harness.console import summary
    from harness.report import write_report

    summary(f"report: {write_report(Path(args.results_dir))}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from harness.cluster import ray_session
    from harness.compare.driver import run_compare
    from harness.config import load_benchmark
    from harness.sweep.driver import run_sweep

    stamp = time.strftime("%Y%m%d-%H%M%S")
    from harness.tracking import check_tracking_uri

    bench = load_benchmark(args.benchmark or args.benchmark_option or DEMO_BENCHMARK, args.set)
    # Checked before Ray starts; resolved so the printed `mlflow ui` command works from anywhere.
    tracking = dataclasses.replace(bench.tracking, uri=check_tracking_uri(bench.tracking.uri))
    bench = dataclasses.replace(bench, tracking=tracking)
    # Each demo run writes a fresh sweep and keeps the earlier ones.
    bench = dataclasses.replace(
        bench, storage=str(Path(bench.storage).with_name(f"{Path(bench.storage).name}-{stamp}"))
    )
    started = time.monotonic()
    with ray_session(bench.ray, args.address):
        results = run_sweep(bench)
        _print_sweep_summary(results, bench, benchmark_file=None)
        out = Path(bench.storage).parent / f"final_compare-{stamp}"
        compare_started = time.monotonic()
        report = run_compare(bench, {r.arch: r for r in results}, out, progress=verbosity_of(args) > 0)
    _print_compare_summary(report, bench, time.monotonic() - compare_started)
    from harness.console import summary

    summary(f"  figures:  {(report.parent / 'figures').resolve()}")
    summary(f"Demo finished in {time.monotonic() - started:.0f} s.")
    return EXIT_OK


def guard_private_ray() -> None:
    """Make the private local Ray instance this command starts refuse processes that lack its token.

    Ray 2.60's servers (``gcs_server``, ``raylet``, workers) listen on every interface whatever
    ``_node_ip_address`` says, so anyone who can reach the machine could run code in the instance. Token
    authentication closes that: the instance, its workers (they inherit this environment) and this driver
    share a random token. Ray reads the mode when it is first imported, hence here, before any import of
    ``ray``; a ``RAY_AUTH_MODE`` the user set is left as it is.
    """
    if "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def main(argv: list[str] | None = None) -> int:
    """Run ``cloudmask``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["data"]:
        from harness.data.__main__ import main as data_main

        return data_main(argv[1:], prog="cloudmask data")
    args = build_parser().parse_args(argv)
    if args.command in ("sweep", "compare", "demo") and getattr(args, "address", None) is None:
        guard_private_ray()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from harness.console import set_verbosity

    set_verbosity(verbosity_of(args))
    commands = {"sweep": _sweep, "compare": _compare, "report": _report, "demo": _demo, "replay": _replay}
    command = {**commands, "predict": _predict, "evaluate": _evaluate, "models": _models}[args.command]
    try:
        return command(args)
    except SweepInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        detail = no_space_detail(exc)
        if detail is not None:  # a full disk is not a bug: say where, and how to go on
            print(
                f"error: no space left on device ({detail}); free space and run the command again "
                "(a sweep: with --resume)",
                file=sys.stderr,
            )
            return EXIT_RUNTIME
        # Not an error the harness raised on purpose: a bug, never "bad input". The traceback is the report.
        traceback.print_exc()
        print("error: internal error (a bug in the harness or in a library it uses)", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
