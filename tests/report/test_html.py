"""report.html: the same report as one page, tables as HTML, every figure embedded."""

import base64
import re

from harness.report import write_report
from tests.test_results import make_results_dir


def test_html_report_embeds_every_figure_and_keeps_the_tables(tmp_path):
    root = make_results_dir(tmp_path / "results")
    report = write_report(root)
    page = (root / "report.html").read_text()
    markdown_text = report.read_text()
    linked = re.findall(r"\(figures/([^)]+\.png)\)", markdown_text)
    assert linked, "the Markdown report links figures"
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(linked) and 'src="figures/' not in page
    for data, name in zip(embedded, linked, strict=True):
        assert base64.b64decode(data) == (root / "figures" / name).read_bytes()
    # Every Markdown table became an HTML table (the tables extension is on).
    assert page.count("<table>") == len(re.findall(r"^\|[-:| ]+\|$", markdown_text, flags=re.M)) > 0
    for heading in re.findall(r"^## (.+)$", markdown_text, flags=re.M):
        assert heading.split(" (")[0] in page
