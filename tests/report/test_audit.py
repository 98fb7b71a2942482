"""harness.report.audit: the "Was the tuning fair?" section and figure, from the audit files of a results dir."""

import matplotlib.image
import pytest

from harness.audit.ranks import TrialCurve, audit_protocol
from harness.errors import ResultsError
from harness.report import write_report
from harness.report.audit import protocol_audit_section
from harness.results import PROTOCOL_AUDIT, PROTOCOL_AUDIT_JSON, SWEEP_CURVES, load_results, write_results
from tests.test_results import make_results_dir


def _audit(reversed_arch="unetpp", asha_enabled=True):
    """unet: early scores rank trials as the last epoch does; ``reversed_arch``: the opposite."""
    curves = {}
    for arch in ("unet", "unetpp"):
        trials = []
        for i in range(6):
            final = 0.5 + 0.05 * (5 - i if arch == reversed_arch else i)
            trials.append(TrialCurve(arch, f"{arch}-{i}", "completed", (0.1 * i, 0.1 * i, final, final)))
        trials.append(TrialCurve(arch, f"{arch}-s", "asha", (0.45,)))
        curves[arch] = trials
    return audit_protocol(
        curves, max_epochs=4, grace_period=1, reduction_factor=2, asha_enabled=asha_enabled, n_boot=300
    )


@pytest.fixture(scope="module")
def audited_report(tmp_path_factory):
    root = make_results_dir(tmp_path_factory.mktemp("results"))
    res = load_results(root)
    res.protocol_audit = _audit()
    write_results(root, res)
    return root, write_report(root)


def test_the_audit_files_round_trip(audited_report):
    root, _ = audited_report
    for name in (PROTOCOL_AUDIT, PROTOCOL_AUDIT_JSON, SWEEP_CURVES):
        assert (root / name).is_file()
    audit = load_results(root).protocol_audit
    expected = _audit()
    assert audit.summary == expected.summary
    assert audit.table.equals(expected.table)
    assert len(audit.curves) == len(expected.curves) == 2 * (6 * 4 + 1)


def test_the_section_sits_after_the_budget_and_says_what_was_flagged(audited_report):
    _, path = audited_report
    text = path.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    i = headings.index("## Was the tuning fair?")
    assert headings[i - 1] == "## Tuning budget" and headings[i + 1] == "## Chosen configurations"
    section = text.split("## Was the tuning fair?", 1)[1].split("## Chosen configurations", 1)[0]
    assert "grace period 1, reduction factor 2; rungs at epoch 1, 2 of 4" in section
    assert "**Flagged: the early stopping biases this comparison.**" in section
    assert "At epoch 1, ρ is +2.00 higher for U-Net than for UNet++" in section
    # One table row per (architecture, rung): rho with its interval, stopped trials and how many looked good.
    assert "| U-Net | 1 | 6 | 1.00 [1.00, 1.00] | 1 | 1 |" in section
    assert "| UNet++ | 2 | 6 | -1.00 [-1.00, -1.00] | 0 | 0 |" in section
    assert "- unetpp: no rung before epoch 4 ranks trials like the last epoch" in section
    assert "`cloudmask replay`" in section
    assert "![Validation IoU per epoch of every sweep trial](figures/fairness.png)" in section


def test_the_figure_exists_and_is_not_blank(audited_report):
    root, _ = audited_report
    image = matplotlib.image.imread(root / "figures" / "fairness.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert image[..., :3].std() > 0.05


def test_no_audit_no_section(tmp_path):
    root = make_results_dir(tmp_path / "r")
    res = load_results(root)
    assert res.protocol_audit is None and protocol_audit_section(res, {}) == []
    write_report(root)
    assert "Was the tuning fair?" not in (root / "report.md").read_text()
    assert not (root / "figures" / "fairness.png").exists()


def test_a_fair_sweep_without_asha_reads_as_prospective(tmp_path):
    root = make_results_dir(tmp_path / "r")
    res = load_results(root)
    res.protocol_audit = _audit(reversed_arch=None, asha_enabled=False)
    text = "\n".join(protocol_audit_section(res, {}))
    assert "ran every trial to the end (`asha.enabled: false`)" in text
    assert "**No sign of bias:**" in text


def test_an_audit_json_without_its_tables_is_refused(tmp_path):
    root = make_results_dir(tmp_path / "r")
    res = load_results(root)
    res.protocol_audit = _audit()
    write_results(root, res)
    (root / SWEEP_CURVES).unlink()
    with pytest.raises(ResultsError, match=SWEEP_CURVES):
        load_results(root)


def test_a_replayed_schedule_is_shown_and_flags_by_its_cost(tmp_path):
    root = make_results_dir(tmp_path / "r")
    res = load_results(root)
    audit = _audit(reversed_arch=None, asha_enabled=False)
    replay = {
        "unet": {"full_best": 0.75, "best_iou_mean": 0.74, "p_found_best": 0.5, "epochs_fraction_mean": 0.61},
        "unetpp": {"full_best": 0.80, "best_iou_mean": 0.70, "p_found_best": 0.06, "epochs_fraction_mean": 0.56},
    }
    for r in replay.values():
        r.update(orders=200, concurrency=2)
    res.protocol_audit = audit_protocol(
        {"unet": [], "unetpp": []} | {a: _curves_of(audit, a) for a in ("unet", "unetpp")},
        max_epochs=4, grace_period=1, reduction_factor=2, asha_enabled=False, n_boot=100, replay=replay,
    )  # fmt: skip
    text = "\n".join(protocol_audit_section(res, {}))
    assert "(200 random arrival orders, 2 trial(s) at a time" in text
    assert "| UNet++ | 0.8000 | 0.7000 | -0.1000 | 0.06 | 0.56 |" in text
    assert "Replayed, the schedule costs UNet++ 0.100 of its best validation IoU and U-Net 0.010" in text


def _curves_of(audit, arch):
    rows = audit.curves[audit.curves.arch == arch]
    return [
        TrialCurve(arch, tid, g.stopped_by.iloc[0], tuple(g.sort_values("epoch").val_iou))
        for tid, g in rows.groupby("trial_id")
    ]
