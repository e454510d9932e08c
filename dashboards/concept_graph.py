"""Interactive concept-hierarchy graphs (plotly), as one self-contained HTML page.

The page holds two views of the same tree: a radial node-link graph (igraph's circular Reingold-Tilford
layout: the root in the centre, each concept on the circle of its depth, subtrees in their own sectors;
hover for name, accuracy, size and description; zoom and pan) and a sunburst (click a branch to drill
into it).
plotly.js is embedded once, so the file opens offline and needs no CDN.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go

__all__ = ["concept_graph_html", "concept_sunburst_figure", "concept_tree_figure", "radial_layout"]

#: Above this many concepts only the largest branches get a text label (all keep their hover label).
_LABEL_ALL_UP_TO = 250
_LABELLED_BRANCHES = 60


def _children(parent: np.ndarray) -> tuple[list[list[int]], list[int]]:
    children: list[list[int]] = [[] for _ in range(parent.size)]
    roots = []
    for node, p in enumerate(parent.tolist()):
        (children[p] if p >= 0 else roots).append(node)
    return children, roots


def radial_layout(parent: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of a forest hung under an implicit root at the origin.

    igraph's circular Reingold-Tilford layout (a tidy tree drawn on concentric circles: the root at the
    centre, depth ``k`` on circle ``k``, subtrees in disjoint sectors) of the tree with the root added.

    Returns
    -------
    x, y : np.ndarray, shape (K,)
    subtree : np.ndarray, shape (K,), int64
        Number of nodes in each node's subtree (itself included).
    """
    import igraph

    parent = np.asarray(parent, dtype=np.int64)
    n = parent.size
    root = n
    edges = [(int(p) if p >= 0 else root, node) for node, p in enumerate(parent.tolist())]
    graph = igraph.Graph(n=n + 1, edges=edges, directed=False)
    coords = np.asarray(graph.layout_reingold_tilford_circular(root=[root]).coords, dtype=np.float64).reshape(n + 1, 2)
    coords -= coords[root]
    return coords[:n, 0], coords[:n, 1], _subtree_sizes(parent)


def _subtree_sizes(parent: np.ndarray) -> np.ndarray:
    children, roots = _children(parent)
    subtree = np.ones(parent.size, dtype=np.int64)
    # Iterative post-order: deep chains must not hit Python's recursion limit.
    stack: list[tuple[int, bool]] = [(r, False) for r in roots]
    while stack:
        node, done = stack.pop()
        if done:
            if children[node]:
                subtree[node] += int(subtree[children[node]].sum())
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children[node])
    return subtree


def _hover(names: Sequence[str], parent: np.ndarray, accuracy: np.ndarray | None, size: np.ndarray | None,
           hover: Sequence[str] | None, subtree: np.ndarray) -> list[str]:
    texts = []
    for node, name in enumerate(names):
        lines = [f"<b>{html.escape(name)}</b>"]
        p = parent[node]
        lines.append(f"parent: {html.escape(names[p]) if p >= 0 else '(root)'}")
        if accuracy is not None:
            lines.append(f"balanced accuracy: {accuracy[node]:.3f}")
        if size is not None:
            lines.append(f"songs: {int(size[node])}")
        lines.append(f"descendants: {int(subtree[node]) - 1}")
        if hover is not None and hover[node]:
            lines.extend(html.escape(part) for part in hover[node].split("; "))
        texts.append("<br>".join(lines))
    return texts


def concept_tree_figure(
    names: Sequence[str],
    parent: npt.ArrayLike,
    *,
    accuracy: npt.ArrayLike | None = None,
    size: npt.ArrayLike | None = None,
    hover: Sequence[str] | None = None,
    title: str = "concept hierarchy",
) -> go.Figure:
    """Radial node-link figure of the tree; node colour = balanced accuracy, marker size ~ log(subtree)."""
    parent = np.asarray(parent, dtype=np.int64)
    if len(names) != parent.size:
        raise ValueError(f"{len(names)} names for {parent.size} nodes")
    acc = None if accuracy is None else np.asarray(accuracy, dtype=np.float64)
    sizes = None if size is None else np.asarray(size)
    x, y, subtree = radial_layout(parent)
    edge_x: list[float | None] = []
    edge_y: list[float | None] = []
    for node, p in enumerate(parent.tolist()):
        px, py = (x[p], y[p]) if p >= 0 else (0.0, 0.0)
        edge_x += [px, float(x[node]), None]
        edge_y += [py, float(y[node]), None]
    if parent.size <= _LABEL_ALL_UP_TO:
        labelled = np.ones(parent.size, dtype=bool)
    else:
        labelled = np.zeros(parent.size, dtype=bool)
        branches = np.flatnonzero(subtree > 1)
        labelled[branches[np.argsort(-subtree[branches], kind="stable")[:_LABELLED_BRANCHES]]] = True
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=edge_x, y=edge_y, mode="lines", line={"color": "#c7c7c7", "width": 1},
                                hoverinfo="skip", showlegend=False))
    figure.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers+text", text=["root"], textposition="top center",
                                marker={"color": "#000000", "size": 10, "symbol": "diamond"},
                                hovertext=[f"root: {int((parent < 0).sum())} top-level concepts"], hoverinfo="text",
                                showlegend=False))
    marker: dict[str, object] = {"size": 6 + 3 * np.log2(subtree), "line": {"width": 0.5, "color": "#333333"}}
    if acc is not None:
        marker.update(color=acc, colorscale="Viridis", showscale=True, colorbar={"title": {"text": "balanced<br>accuracy"}})
    else:
        marker.update(color="#1f77b4")
    figure.add_trace(go.Scatter(
        x=x, y=y, mode="markers+text",
        text=[html.escape(n) if show else "" for n, show in zip(names, labelled)],
        textposition="top center", textfont={"size": 10},
        hovertext=_hover(names, parent, acc, sizes, hover, subtree), hoverinfo="text",
        marker=marker, showlegend=False,
    ))
    figure.update_layout(
        title={"text": html.escape(title)}, hovermode="closest", plot_bgcolor="#ffffff", height=900,
        xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x", "scaleratio": 1},
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return figure


def concept_sunburst_figure(names: Sequence[str], parent: npt.ArrayLike, *, accuracy: npt.ArrayLike | None = None,
                            title: str = "concept hierarchy", maxdepth: int = 4) -> go.Figure:
    """Sunburst of the tree (click a sector to drill into its branch); colour = balanced accuracy."""
    parent = np.asarray(parent, dtype=np.int64)
    ids = ["root", *(f"n{i}" for i in range(parent.size))]
    labels = ["all concepts", *(html.escape(n) for n in names)]
    parents = ["", *("root" if p < 0 else f"n{p}" for p in parent.tolist())]
    trace: dict[str, object] = {}
    if accuracy is not None:
        acc = np.asarray(accuracy, dtype=np.float64)
        trace["marker"] = {"colors": [float(acc.mean()) if acc.size else 0.0, *acc.tolist()], "colorscale": "Viridis",
                           "showscale": True, "colorbar": {"title": {"text": "balanced<br>accuracy"}}}
    figure = go.Figure(go.Sunburst(ids=ids, labels=labels, parents=parents, maxdepth=maxdepth,
                                   hoverinfo="label", **trace))
    figure.update_layout(title={"text": html.escape(title)}, height=800, margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return figure


def concept_graph_html(
    names: Sequence[str],
    parent: npt.ArrayLike,
    *,
    accuracy: npt.ArrayLike | None = None,
    size: npt.ArrayLike | None = None,
    hover: Sequence[str] | None = None,
    title: str = "concept hierarchy",
    subtitle: str = "",
) -> str:
    """A complete, self-contained HTML page (plotly.js inline) with the tree and sunburst views.

    Parameters
    ----------
    names : sequence of str
        Node labels (playlist names, tags, genres...), ``K`` of them.
    parent : array_like of int, shape (K,)
        Parent node of each node, ``-1`` under the root.
    accuracy, size : array_like, shape (K,), optional
        Balanced test accuracy (colour) and number of songs (hover) of each concept.
    hover : sequence of str, optional
        Extra hover text per node (``"; "`` separates lines).
    """
    tree = concept_tree_figure(names, parent, accuracy=accuracy, size=size, hover=hover, title=title)
    sunburst = concept_sunburst_figure(names, parent, accuracy=accuracy, title=f"{title}: branches")
    config = {"displaylogo": False, "responsive": True}
    body = tree.to_html(full_html=False, include_plotlyjs=True, config=config)
    body += sunburst.to_html(full_html=False, include_plotlyjs=False, config=config)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{font-family:sans-serif;margin:1em 2em;color:#222}p{margin:.3em 0}</style>\n"
        "</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        + (f"<p>{html.escape(subtitle)}</p>\n" if subtitle else "")
        + "<p>Radial tree: the root is at the centre and each ring is one level deeper; a concept hangs under "
        "the already-placed concept whose songs activate its classifier most (S[parent, child]). Colour = "
        "balanced test accuracy. Hover a node for details; drag to zoom, double-click to reset. Below, click "
        "a sector of the sunburst to open its branch.</p>\n"
        + body
        + "\n</body>\n</html>\n"
    )
