"""The figures' look, shared by every plot of the report: palette, mask colours, matplotlib style, saving."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from harness.diskspace import write_atomically

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
# Masks and error maps share one scheme so the eye can move between them: clear dark, cloud light,
# errors in two saturated colours that stay apart for colour-blind readers.
CLEAR, CLOUD, FALSE_POS, FALSE_NEG = "#262626", "#e0e0e0", "#E69F00", "#0072B2"
DPI = 110
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}


def arch_colours(archs: list[str]) -> dict[str, str]:
    """One palette colour per architecture, in the report's order."""
    return {arch: PALETTE[i % len(PALETTE)] for i, arch in enumerate(archs)}


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at the report's resolution on white, whole or not at all; return ``path``."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, facecolor="white")
    write_atomically(path, png.getvalue())
    return path
