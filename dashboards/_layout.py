"""Layout rules every chart follows so that nothing is clipped, in a dashboard card or in a PNG.

optuna-dashboard shows a saved chart in a card about 600 px wide, and plotly never wraps a title: a long
one runs off the card. :func:`set_title` wraps titles into lines of at most :data:`TITLE_CHARS`
characters (they fit a card at :data:`TITLE_FONT` px) and makes the top margin hold every line.
:func:`wrap` breaks axis and column titles the same way. 3-D scatter plots draw their markers as text
glyphs: only :data:`SYMBOLS_3D` render everywhere (plotly's ``"x"`` is the emoji U+274C, an empty box on
a machine without an emoji font, as in headless Chromium).
"""

from __future__ import annotations

import textwrap

import plotly.graph_objects as go

#: Longest title line, in characters: ~480 px at :data:`TITLE_FONT`, inside a dashboard card.
TITLE_CHARS = 60
TITLE_FONT = 15
#: Space above a title and below it, and the height of one of its lines (1.3 em), in px.
TITLE_PAD_PX = 12
TITLE_LINE_PX = 20
#: How far plotly.js lifts a title of several lines above its anchor (see :func:`set_title`), in px.
MULTILINE_SHIFT_PX = 11
#: Marker symbols of a plotly 3-D scatter whose glyphs every font has (Scatter3d knows these and "x").
SYMBOLS_3D = frozenset({"circle", "circle-open", "cross", "diamond", "diamond-open", "square", "square-open"})


def wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters, joined by ``<br>`` (plotly's line break).

    Existing ``<br>`` breaks are kept; a word longer than ``width`` is cut.
    """
    lines = []
    for part in text.split("<br>"):
        lines += textwrap.wrap(part, width, break_on_hyphens=False) or [""]
    return "<br>".join(lines)


def title_margin(lines: int, extra: int = 0) -> int:
    """Top margin (px) that holds a title of ``lines`` lines and ``extra`` px under it."""
    shift = MULTILINE_SHIFT_PX if lines > 1 else 0
    return TITLE_PAD_PX + shift + TITLE_LINE_PX * lines + TITLE_PAD_PX + extra


def set_title(figure: go.Figure, text: str, *, extra: int = 0, width: int = TITLE_CHARS) -> go.Figure:
    """Give ``figure`` the title ``text``, wrapped at ``width`` characters, at the top left, and a top margin
    that holds every line plus ``extra`` px under them for what sits between the title and the plotting area
    (subplot titles, the labels of parallel coordinates).

    The title hangs from the top of the figure (its first line :data:`TITLE_PAD_PX` below the edge, the others
    under it) and the margin is computed here, not by plotly's title automargin: that one stacks the lines
    of a wrapped title over the plot when the margin is already large enough, and gives up when a side legend
    also pushes the margins (a 600 px dashboard card).
    """
    wrapped = wrap(text, width)
    lines = wrapped.count("<br>") + 1
    # plotly.js (2.35 to 4.1) lifts a title of several lines by about 0.7 em: the padding makes up for it, and
    # the margin leaves room for a version that does not.
    pad = TITLE_PAD_PX + (MULTILINE_SHIFT_PX if lines > 1 else 0)
    figure.update_layout(
        title={"text": wrapped, "x": 0.01, "xanchor": "left", "xref": "container", "y": 1.0, "yanchor": "top",
               "yref": "container", "pad": {"t": pad}, "font": {"size": TITLE_FONT}},
        margin={"t": title_margin(lines, extra)})
    return figure
