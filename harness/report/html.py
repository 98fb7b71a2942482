"""``report.html``: the Markdown report as one self-contained page, figures embedded.

MLflow's artifact viewer renders HTML with its images only when they are inside the page (a relative
``figures/x.png`` link shows as text there), so each figure becomes a ``data:`` URI.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

_IMAGE = re.compile(r'src="(figures/[^"]+\.png)"')
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def render_html(markdown_text: str, root: Path, title: str) -> str:
    """The report page: Markdown tables and text as HTML, each ``figures/*.png`` under ``root`` inlined."""
    body = markdown.markdown(markdown_text, extensions=["tables"])

    def inline(match: re.Match) -> str:
        path = root / match.group(1)
        if not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode("ascii")}"'

    body = _IMAGE.sub(inline, body)
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
