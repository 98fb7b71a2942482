"""`cloudmask`: one command line, shared options, documented exit codes, no traceback for bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import EXIT_BAD_INPUT, EXIT_RUNTIME, build_parser, main
from harness.errors import InputError, RunError
from tests.conftest import SMOKE

CLOUDMASK = shutil.which("cloudmask", path=str(Path(sys.executable).parent))


def test_every_subcommand_and_option_has_help_text():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(subparsers.choices) == {
        "sweep",
        "compare",
        "report",
        "replay",
        "demo",
        "predict",
        "evaluate",
        "models",
        "data",
    }
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"cloudmask {name}: {action.dest} has no help text"


def test_shared_options_mean_the_same_in_sweep_and_compare():
    parser = build_parser()
    for command in ("sweep", "compare"):
        args = parser.parse_args([command, "b.yaml", "--data", "D", "--tracking-uri", "U", "--storage", "S",
                                  "--address", "A", "--set", "train.epochs=1"])  # fmt: skip
        assert (args.data, args.tracking_uri, args.storage, args.address, args.set) == (
            "D", "U", "S", "A", ["train.epochs=1"],
        )  # fmt: skip


def test_bad_benchmark_key_exits_3_naming_the_key(tmp_path, capsys):
    code = main(["sweep", str(SMOKE), "--storage", str(tmp_path / "s"), "--set", "train.loss=bogus"])
    assert code == EXIT_BAD_INPUT
    assert "train.loss" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(CLOUDMASK is None, reason="the cloudmask script is installed by pip install -e .")
def test_installed_script_reports_bad_input_without_a_traceback(tmp_path):
    proc = subprocess.run([CLOUDMASK, "report", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "nowhere" in proc.stderr and "Traceback" not in proc.stderr
    usage = subprocess.run([CLOUDMASK, "sweep"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_a_bug_inside_a_command_exits_4_with_its_traceback_never_as_bad_input(tmp_path, monkeypatch, capsys):
    import harness.report

    def buggy_render(results_dir):
        return int(float("nan"))  # a ValueError from deep inside, not the user's input

    monkeypatch.setattr(harness.report, "write_report", buggy_render)
    assert main(["report", str(tmp_path)]) == EXIT_RUNTIME
    err = capsys.readouterr().err
    assert "Traceback" in err and "cannot convert float NaN to integer" in err and "internal error" in err


def test_the_cli_maps_the_error_hierarchy_to_exit_codes(tmp_path, monkeypatch, capsys):
    import harness.report

    for error, code in ((InputError("bad key x"), EXIT_BAD_INPUT), (RunError("store gone"), EXIT_RUNTIME)):

        def failing(results_dir, error=error):
            raise error

        monkeypatch.setattr(harness.report, "write_report", failing)
        assert main(["report", str(tmp_path)]) == code
        err = capsys.readouterr().err
        assert err.strip() == f"error: {error}" and "Traceback" not in err


def test_module_forms_run_the_same_subcommands(tmp_path):
    for module in ("harness.sweep", "harness.final_compare", "harness.demo", "harness.replay"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "--" in proc.stdout, module


def test_data_subcommand_takes_the_shared_data_flag(synthetic_root):
    assert main(["data", "verify", "--data", str(synthetic_root), "--quiet"]) == 0


def test_every_data_option_has_help_text():
    from harness.data.__main__ import build_parser as data_parser

    subparsers = next(a for a in data_parser()._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"cloudmask data {name}: {action.dest} has no help text"


def test_a_malformed_set_is_a_usage_error_and_a_bad_value_names_the_override(tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["sweep", str(SMOKE), "--set", "noequals"])
    assert usage.value.code == 2  # was 3, as if the benchmark file were bad
    assert "argument --set: override 'noequals' is not of the form key.sub=value" in capsys.readouterr().err
    code = main(["sweep", str(SMOKE), "--storage", str(tmp_path / "s"), "--set", "train.epochs=0"])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    # was "…/smoke.yaml: train.epochs: …", blaming a file that says epochs: 4
    assert f"error: override 'train.epochs=0' (command line, over {SMOKE}): train.epochs: must be in 1..10000" in err


def test_version_and_every_subcommands_help_ends_with_an_example_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("cloudmask-harness ")
    with pytest.raises(SystemExit):
        main(["-h"])
    assert "``" not in capsys.readouterr().out  # plain text, not reStructuredText
    for command in ("sweep", "compare", "report", "replay", "demo", "predict", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "-h"])
        out = capsys.readouterr().out
        assert f"example: cloudmask {command}" in out and "exit codes: 0 ok; 2 usage; 3 bad input" in out, command


def test_demo_takes_its_benchmark_positionally_like_every_command_and_still_reads_the_old_option():
    parser = build_parser()
    assert parser.parse_args(["demo", "b.yaml"]).benchmark == "b.yaml"
    old = parser.parse_args(["demo", "--benchmark", "b.yaml"])
    assert (old.benchmark, old.benchmark_option) == (None, "b.yaml")


def test_every_command_takes_quiet_or_verbose_but_not_both(capsys):
    from harness.cli import verbosity_of
    from harness.console import NORMAL, QUIET, VERBOSE

    parser = build_parser()
    for command in (["sweep", "b.yaml"], ["compare"], ["report", "d"], ["demo"], ["replay"]):
        assert verbosity_of(parser.parse_args([*command, "-q"])) == QUIET
        assert verbosity_of(parser.parse_args([*command, "--verbose"])) == VERBOSE
        assert verbosity_of(parser.parse_args(command)) == NORMAL
        with pytest.raises(SystemExit) as usage:
            parser.parse_args([*command, "-q", "-v"])
        assert usage.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_quiet_still_prints_the_answer_and_the_errors(tmp_path, capsys):
    from harness import console
    from tests.test_results import make_results_dir

    root = make_results_dir(tmp_path / "results")
    try:
        assert main(["report", str(root), "-q"]) == 0
        assert capsys.readouterr().out == f"report: {root / 'report.md'}\n"
        assert main(["report", str(tmp_path / "nowhere"), "-q"]) == 3
        assert "nowhere" in capsys.readouterr().err
    finally:
        console.set_verbosity(console.NORMAL)


def test_models_lists_every_registered_architecture_with_its_costs(tmp_path, capsys):
    from harness.models import build_model, count_parameters, flops_per_patch, get_model_spec, list_models

    out = tmp_path / "models.json"
    assert main(["models", "--patch-size", "64", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == list_models()
    printed = capsys.readouterr().out
    assert "GFLOPs/64 px" in printed and f"{len(rows)} architectures" in printed
    for row in rows:
        spec = get_model_spec(row["name"])
        assert row["label"] in printed and row["family"] == spec.family
        depth, width = spec.reference_shape  # every built-in spec's reference depth is in its range
        model = build_model(row["name"], depth=depth, base_channels=width)
        assert row["params_m"] * 1e6 == pytest.approx(count_parameters(model), abs=0.5)
        assert row["gflops"] * 1e9 == pytest.approx(flops_per_patch(model, 64), abs=0.5)
    # The paper-exact U-Net at the UNet++ paper's shape: 7.76 M parameters (with batch norm's scales).
    assert round(rows[0]["params_m"], 2) == 7.76


def test_models_refuses_a_patch_size_no_depth_divides(capsys):
    assert main(["models", "--patch-size", "100"]) == 3
    assert "--patch-size 100: expected a multiple of 32" in capsys.readouterr().err
