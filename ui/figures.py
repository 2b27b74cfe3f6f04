"""Plotly figures and small image compositions shared by the Learn, Reconstruct and Codebook pages.

One colour per code id on every page (`code_colors`), amber for "the nearest code", red for dead
codes, so a class learns the colours once. Pure plotting: the numbers come from vqdemo.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ui import charts, theme
from ui.shared import shared
from vqdemo.analysis import image_grid
from vqdemo.images import png_data_url, to_uint8

ARGMIN = theme.ARGMIN  # the nearest code / the picked thing
SELECT = "#111827"    # outline of the selected cell
DEAD = theme.DEAD     # codes no vector picked: the only red of the app
NEUTRAL = "#9ca3af"
LABEL_COLORS = list(theme.RUN_COLORS) + ["#637939"]   # ten digits or classes, no red
FONT = dict(family="Source Sans Pro, sans-serif")


@lru_cache(maxsize=32)
def code_colors(k: int) -> tuple[str, ...]:
    """K distinct-ish colours, the same for a code id on every page: golden-angle hues, three lightnesses.

    Hues stay within orange .. magenta (0.07 .. 0.90 of the wheel): red is kept for dead codes."""
    out = []
    for i in range(k):
        hue = 0.07 + 0.83 * ((i * 0.381966) % 1.0)
        light = (0.50, 0.38, 0.62)[i % 3]
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.70)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return tuple(out)


def code_colorscale(k: int) -> list[list]:
    """A stepped colourscale: z = code id (with zmin=-0.5, zmax=k-0.5) gets exactly that code's colour."""
    scale = []
    for i, c in enumerate(code_colors(k)):
        scale += [[i / k, c], [(i + 1) / k, c]]
    return scale


def _layout(fig: go.Figure, height: int, width: int | None = None, title: str | None = None, **kw) -> go.Figure:
    title = theme.wrap(title) if title else None
    margin = kw.pop("margin", dict(l=8, r=8, t=theme.top_margin(title, False) if title else 8, b=8))
    fig.update_layout(height=height, width=width, margin=margin, title=theme.title(title) if title else None,
                      font=FONT, showlegend=kw.pop("showlegend", False), **kw)
    return theme.style(fig)


# ----------------------------------------------------------------------------------------- code maps

@shared
def code_maps(maps: Sequence[np.ndarray], k: int, titles: Sequence[str] | None = None, cell_px: int = 22,
              max_text_cells: int = 12) -> go.Figure:
    """One coloured grid per code map (h, w), side by side; hover shows row, column and code id.

    The figure has a height (h cells of about cell_px) but no width: it takes its column's width and the
    cells stay square (scaleanchor), so a narrow column shrinks the maps instead of cutting their right side.
    Ids are written in the cells only where they fit at the mode's text size.
    """
    n = len(maps)
    h, w = maps[0].shape
    fig = make_subplots(1, n, subplot_titles=list(titles) if titles else None, horizontal_spacing=0.02)
    show_text = max(h, w) <= max_text_cells and cell_px >= (2 * theme.fonts().small - 4 if theme.presenter() else 13)
    for i, m in enumerate(maps):
        fig.add_trace(go.Heatmap(
            z=m, zmin=-0.5, zmax=k - 0.5, colorscale=code_colorscale(k), showscale=False,
            texttemplate="%{z}" if show_text else None, textfont=dict(size=max(7, min(11, int(cell_px * 0.5)))),
            hovertemplate=f"{titles[i] if titles else ''}<br>row %{{y}}, col %{{x}}<br>code #%{{z}}<extra></extra>",
            xgap=1, ygap=1), 1, i + 1)
        fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain", row=1, col=i + 1)
        fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                         scaleanchor=f"x{i + 1 if i else ''}", constrain="domain", row=1, col=i + 1)
    fig.update_annotations(font_size=11)
    top = theme.fonts().small + 12 if titles else 2
    return _layout(fig, height=h * cell_px + top + 2, margin=dict(l=2, r=2, t=top, b=2))


@shared
def clickable_code_map(codes: np.ndarray, k: int, selected: tuple[int, int] | None, px: int = 300) -> go.Figure:
    """A code map that reports clicks: coloured cells (a heatmap, which scales with its column) under
    invisible square markers (Plotly returns clicks on scatter points, not on heatmaps).

    customdata of each point is [row, col]; the selected cell gets a thick outline and the other cells that
    picked the same code a thin dashed one. The figure is px high and as wide as its column; the cells stay square.
    """
    h, w = codes.shape
    rows, cols = np.divmod(np.arange(h * w), w)
    ids = codes.reshape(-1)
    fig = go.Figure(go.Heatmap(z=codes, zmin=-0.5, zmax=k - 0.5, colorscale=code_colorscale(k), showscale=False,
                               texttemplate="%{z}" if max(h, w) <= 12 else None, xgap=1, ygap=1, hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=cols, y=rows, mode="markers", text=[str(i) for i in ids],
        marker=dict(symbol="square", size=max(8, (px - 16) / max(h, w) * 0.6), color="white", opacity=0.01),
        customdata=np.stack([rows, cols], 1),
        hovertemplate="row %{customdata[0]}, col %{customdata[1]}<br>code #%{text}<extra>click to follow</extra>",
        selected=dict(marker=dict(opacity=0.01)), unselected=dict(marker=dict(opacity=0.01)),
    ))
    if selected is not None:
        r, c = selected
        for sr, sc in zip(*np.nonzero(codes == codes[r, c])):
            if (sr, sc) != (r, c):
                fig.add_shape(type="rect", x0=sc - 0.42, x1=sc + 0.42, y0=sr - 0.42, y1=sr + 0.42,
                              line=dict(color=SELECT, width=2, dash="dot"), fillcolor="rgba(0,0,0,0)")
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                      line=dict(color=SELECT, width=4), fillcolor="rgba(0,0,0,0)")
    fig.update_xaxes(range=[-0.5, w - 0.5], showticklabels=False, showgrid=False, zeroline=False, fixedrange=True,
                     constrain="domain")
    fig.update_yaxes(range=[h - 0.5, -0.5], showticklabels=False, showgrid=False, zeroline=False, fixedrange=True,
                     scaleanchor="x", constrain="domain")
    return _layout(fig, height=px, dragmode=False, clickmode="event+select")


@shared
def matrix(m: np.ndarray, x_title: str, y_title: str, height: int, colorscale: str = "Viridis",
           marks: np.ndarray | None = None, hover: str = "%{z:.3f}") -> go.Figure:
    """A tensor drawn as a heatmap (rows down); `marks` (one column per row) puts an amber dot on it."""
    fig = go.Figure(go.Heatmap(z=m, colorscale=colorscale, showscale=False,
                               hovertemplate=f"{y_title} %{{y}}, {x_title} %{{x}}: {hover}<extra></extra>"))
    if marks is not None:
        fig.add_trace(go.Scatter(x=marks, y=np.arange(len(marks)), mode="markers", hoverinfo="skip",
                                 marker=dict(color=ARGMIN, size=5, line=dict(color="black", width=0.5))))
    fig.update_xaxes(title=dict(text=x_title, font=dict(size=11)), showticklabels=False, showgrid=False)
    fig.update_yaxes(title=dict(text=y_title, font=dict(size=11)), showticklabels=False, showgrid=False,
                     autorange="reversed")
    return _layout(fig, height=height, margin=dict(l=28, r=4, t=4, b=28))


# ------------------------------------------------------------------------------------------ distances

@shared
def distance_bars(dist: np.ndarray, chosen: int, height: int = 300) -> go.Figure:
    """Squared distance from one latent vector to every code; the argmin in amber."""
    k = len(dist)
    colors = [ARGMIN if i == chosen else NEUTRAL for i in range(k)]
    fig = go.Figure(go.Bar(x=np.arange(k), y=dist, marker_color=colors, marker_line_width=0,
                           hovertemplate="code #%{x}<br>|z_e - e|² = %{y:.4f}<extra></extra>"))
    fig.add_annotation(x=chosen, y=float(dist[chosen]), text=f"argmin: #{chosen}", showarrow=True, arrowhead=2,
                       ay=-40, font=dict(color="#92400e", size=13), arrowcolor=ARGMIN, bgcolor="rgba(255,255,255,0.8)")
    fig.update_xaxes(title="code id", range=[-0.5, k - 0.5])
    fig.update_yaxes(title="squared distance", rangemode="tozero")
    return _layout(fig, height=height, bargap=0.1)


@shared
def vector_compare(z: np.ndarray, e: np.ndarray, code: int, k: int, height: int = 220) -> go.Figure:
    """The encoder's vector beside the code it snaps to, dimension by dimension."""
    d = np.arange(len(z))
    fig = go.Figure([
        go.Bar(x=d, y=z, name="z_e (encoder)", marker_color=NEUTRAL),
        go.Bar(x=d, y=e, name=f"e_{code} (code)", marker_color=code_colors(k)[code]),
    ])
    fig.update_xaxes(title="dimension")
    return _layout(fig, height=height, showlegend=True, barmode="group",
                   legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), margin=dict(l=8, r=8, t=40, b=8))


@shared
def tile_mosaic(tiles: Tensor, order: np.ndarray, counts: np.ndarray, ncol: int, tile_px: int,
                selected: int | None = None) -> go.Figure:
    """Each code decoded alone, in `order`, as one image: a code-coloured frame when used, dead codes
    tinted and framed red and crossed out (a shape, for those who do not see red). `selected`: the highlighted
    code, framed amber, the other tiles faded towards white.
    customdata of the hover points is the code id.

    The figure has a height (tiles of about tile_px) but no width: it takes its column's width and the tiles
    stay square (scaleanchor), so a narrow column shrinks the mosaic instead of cutting its right side.
    """
    k, c, th, tw = tiles.shape
    imgs = tiles[torch.as_tensor(order)].clamp(0, 1).expand(-1, 3, -1, -1).clone()  # (K, 3, H, W)
    dead = torch.as_tensor(counts[order] == 0)
    red = torch.tensor([0.86, 0.15, 0.15])[:, None, None]
    cross = torch.zeros(th, tw, dtype=torch.bool)   # (H, W): a white X marks a dead tile by shape, not red alone
    diag = torch.arange(min(th, tw))
    cross[diag, diag] = cross[diag, tw - 1 - diag] = True
    imgs[dead] = torch.where(cross, 1.0, 0.45 * imgs[dead] + 0.55 * red)
    frame = 2 if selected is None else 3
    framed = torch.ones(len(order), 3, th + 2 * frame, tw + 2 * frame)
    colors = code_colors(k)
    for i, code in enumerate(order):
        hexc = ARGMIN if code == selected else DEAD if dead[i] else colors[code]
        framed[i] = torch.tensor([int(hexc[j:j + 2], 16) / 255 for j in (1, 3, 5)])[:, None, None]
    framed[:, :, frame:-frame, frame:-frame] = imgs
    others = torch.as_tensor(order != selected) if selected is not None else torch.zeros(len(order), dtype=torch.bool)
    framed[others] = (1 - charts.DIM) * framed[others] + charts.DIM   # (K, 3, H, W): the rest fade to white
    grid = image_grid(framed, nrow=ncol, pad=1, fill=1.0)                  # (3, H', W')
    pic = to_uint8(grid)
    pic = np.ascontiguousarray(pic if pic.ndim == 3 else np.repeat(pic[..., None], 3, -1))
    height, width = pic.shape[:2]
    step = th + 2 * frame + 1
    rows, cols = np.divmod(np.arange(len(order)), ncol)
    fig = go.Figure(go.Image(source=png_data_url(pic), hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=1 + cols * step + step / 2, y=1 + rows * step + step / 2, mode="markers",
        marker=dict(symbol="square", size=tile_px, opacity=0.01, color="white"), customdata=order,
        text=[f"{int(n)} uses" if n else "dead: never used" for n in counts[order]],
        hovertemplate="code #%{customdata}<br>%{text}<extra>click to pick</extra>",
        selected=dict(marker=dict(opacity=0.01)), unselected=dict(marker=dict(opacity=0.01)),
    ))
    scale = tile_px / step
    fig.update_xaxes(visible=False, range=[0, width], constrain="domain")
    fig.update_yaxes(visible=False, range=[height, 0], scaleanchor="x", constrain="domain")
    return _layout(fig, height=int(height * scale) + 16, dragmode=False, clickmode="event+select")


# -------------------------------------------------------------------------------------------- 2-D maps

@shared
def map_2d(points: np.ndarray, codebook: np.ndarray, point_codes: np.ndarray, point_labels: np.ndarray,
           counts: np.ndarray, by: str, class_names: Sequence[str] | None, height: int = 460,
           method: str = "PCA", selected: int | None = None) -> go.Figure:
    """Encoder outputs (dots) around the codebook vectors (diamonds, dead ones red crosses) in 2-D.

    by="code": dots take their code's colour (each dot should sit by its diamond); by="label": the
    digit or class of the image the dot came from. `selected`: the highlighted code, its diamond large and
    ringed, its outputs in front and outlined, everything else faded. customdata of every point starts with
    the code id it shows, so a click tells the page which code it was.
    """
    k = len(codebook)
    colors = np.array(code_colors(k))
    faded = selected is not None and 0 <= selected < k
    dot_opacity = 0.15 if faded else 0.5

    def dots(sel: np.ndarray, name: str, color, opacity: float, **marker) -> go.Scattergl:
        return go.Scattergl(x=points[sel, 0], y=points[sel, 1], mode="markers", name=name,
                            marker=dict(size=marker.pop("size", 4), opacity=opacity, color=color, **marker),
                            customdata=point_codes[sel], hovertemplate="encoder output → code #%{customdata}"
                                                                       f"<extra>{name}</extra>",
                            selected=dict(marker=dict(opacity=opacity)), unselected=dict(marker=dict(opacity=opacity)))

    fig = go.Figure()
    by_label = by == "label" and (point_labels >= 0).any()
    label_colors = np.array(LABEL_COLORS)[point_labels % 10]
    if by_label:
        for lab in np.unique(point_labels):
            name = class_names[lab] if class_names and 0 <= lab < len(class_names) else str(lab)
            sel = point_labels == lab
            fig.add_trace(dots(sel, name, LABEL_COLORS[int(lab) % 10], dot_opacity))
    else:
        fig.add_trace(dots(np.ones(len(points), bool), "encoder outputs", colors[point_codes], dot_opacity))
    alive = counts > 0
    ids = np.arange(k)
    diamond_colors = [c if not faded else charts.dimmed(c) for c in colors[alive]]
    fig.add_trace(go.Scatter(x=codebook[alive, 0], y=codebook[alive, 1], mode="markers", name="codebook vectors",
                             marker=dict(symbol="diamond", size=11, color=diamond_colors,
                                         line=dict(color=NEUTRAL if faded else "black", width=1.2)),
                             customdata=np.stack([ids[alive], counts[alive]], 1),
                             hovertemplate="code #%{customdata[0]}<br>%{customdata[1]} uses<extra></extra>",
                             selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1))))
    if (~alive).any():
        fig.add_trace(go.Scatter(x=codebook[~alive, 0], y=codebook[~alive, 1], mode="markers", name="dead codes",
                                 marker=dict(symbol="x", size=10, color=charts.dimmed(DEAD) if faded else DEAD,
                                             line=dict(color="white", width=0.5)),
                                 customdata=ids[~alive], hovertemplate="code #%{customdata}: dead<extra></extra>",
                                 selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1))))
    if faded:
        mine = point_codes == selected
        if mine.any():
            fig.add_trace(dots(mine, f"outputs that picked #{selected}",
                               (label_colors if by_label else colors[point_codes])[mine], 1.0, size=7,
                               line=dict(color=charts.SELECTED, width=1)))
        fig.add_trace(go.Scatter(
            x=codebook[[selected], 0], y=codebook[[selected], 1], mode="markers+text", name=f"code #{selected}",
            text=[f"#{selected}"], textposition="top center", textfont=dict(color=charts.SELECTED),
            marker=dict(symbol="diamond" if alive[selected] else "x", size=20,
                        color=colors[selected] if alive[selected] else DEAD, line=dict(color=charts.SELECTED, width=3)),
            customdata=[[selected, counts[selected]]], hovertemplate="code #%{customdata[0]}<br>%{customdata[1]} uses"
                                                                     "<extra></extra>",
            selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1))))
    fig.update_xaxes(title=f"{method} 1", showticklabels=False, zeroline=False)
    fig.update_yaxes(title=f"{method} 2", showticklabels=False, zeroline=False)
    return _layout(fig, height=height, showlegend=True, legend=dict(orientation="h", y=-0.08, x=0),
                   clickmode="event+select")


@shared
def psnr_by_depth(psnrs: Sequence[float], height: int = 240) -> go.Figure:
    """RQ: image quality as depths are added (coarse to fine)."""
    d = np.arange(1, len(psnrs) + 1)
    fig = go.Figure(go.Scatter(x=d, y=list(psnrs), mode="lines+markers+text", text=[f"{p:.1f}" for p in psnrs],
                               textposition="top center", line=dict(color=ARGMIN, width=3),
                               hovertemplate="depths 1..%{x}: %{y:.2f} dB<extra></extra>"))
    fig.update_xaxes(title="depths used", dtick=1)
    span = max(psnrs) - min(psnrs) if len(psnrs) > 1 else 1.0
    fig.update_yaxes(title="PSNR (dB)", range=[min(psnrs) - 0.15 * span - 0.1, max(psnrs) + 0.3 * span + 0.1])
    return _layout(fig, height=height)


@shared
def distance_strips(rows: Sequence[tuple[str, np.ndarray]], height: int = 280) -> go.Figure:
    """Distances from the encoder outputs' centre, one horizontal box per row (outputs or an init's codes), log x."""
    fig = go.Figure()
    seen = []
    for name, values in reversed(list(rows)):
        v = np.clip(np.asarray(values, dtype=float), 1e-4, None)
        seen.append(v)
        fig.add_trace(go.Box(x=v, name=name, orientation="h", boxpoints=False,
                             marker_color=ARGMIN if "codes" in name else "#4c78a8",
                             hovertemplate="%{x:.3f}<extra>" + name + "</extra>"))
    every = np.concatenate(seen) if seen else np.ones(1)
    ticks = charts.log_ticks(float(every.min()), float(every.max()))   # full-size labels (Plotly shrinks minor ones)
    fig.update_xaxes(type="log", title="distance from the centre of the encoder's outputs (latent units, log scale)",
                     tickvals=ticks or None, ticktext=[f"{t:g}" for t in ticks] or None)
    return _layout(fig, height=height)


# ------------------------------------------------------------------------------------ images to show

def channel_mosaic(z: Tensor, ncol: int | None = None) -> Tensor:
    """A latent (D, h, w) as D small grey maps, each scaled to its own range: (1, H', W')."""
    lo = z.flatten(1).min(1).values[:, None, None]
    hi = z.flatten(1).max(1).values[:, None, None]
    maps = ((z - lo) / (hi - lo).clamp_min(1e-8))[:, None]  # (D, 1, h, w)
    return image_grid(maps, nrow=ncol, pad=1, fill=1.0)


def overlay_cells(image: Tensor, mask: Tensor, color: str, alpha: float = 0.45) -> Tensor:
    """Tint the pixels under the latent cells where mask (h, w) is true: (C, H, W) -> (3, H, W)."""
    c, hh, ww = image.shape
    h, w = mask.shape
    fy, fx = -(-hh // h), -(-ww // w)
    m = mask.float().repeat_interleave(fy, 0).repeat_interleave(fx, 1)[:hh, :ww]  # (h, w) -> (H, W)
    rgb = image.expand(3, -1, -1) if c == 1 else image
    tint = torch.tensor([int(color[j:j + 2], 16) / 255 for j in (1, 3, 5)])[:, None, None]
    return rgb * (1 - alpha * m) + tint * alpha * m
