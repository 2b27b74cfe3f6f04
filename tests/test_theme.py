"""One visual language (ui.theme, ui.charts, ui.figures): projector-sized chart text, red only for dead codes,
one colour per run, one bar per code id, readable log ticks, a normalised step axis."""

from __future__ import annotations

import colorsys

import numpy as np

from ui import charts, theme
from ui import figures as fg


def _hue(color: str) -> float:
    r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return colorsys.rgb_to_hls(r, g, b)[0]


def _reddish(color: str) -> bool:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    hue = _hue(color)
    return (hue < 0.04 or hue > 0.96) and r > 1.4 * max(g, b)


def test_red_is_kept_for_dead_codes():
    assert _reddish(theme.DEAD)
    for k in (8, 64, 512):
        assert not any(_reddish(c) for c in fg.code_colors(k)), k
    assert not any(_reddish(c) for c in theme.RUN_COLORS + tuple(fg.LABEL_COLORS))


def test_runs_keep_one_distinct_colour():
    colors = charts.run_colors(["a", "b", "c"])
    assert len(set(colors.values())) == 3
    rows = {name: [{"type": "val", "step": s, "psnr": 20.0 + s / 100} for s in (100, 200)] for name in colors}
    psnr = charts.overlay(rows, "psnr", "PSNR", "dB", colors=colors)
    used = charts.overlay({"c": rows["c"], "a": rows["a"]}, "psnr", "codes", "n", colors=colors)
    assert {t.name: t.line.color for t in psnr.data} == colors
    assert {t.name: t.line.color for t in used.data} == {"c": colors["c"], "a": colors["a"]}


def test_a_short_and_a_long_run_share_a_fraction_axis():
    short = [{"type": "val", "step": s, "psnr": 1.0} for s in (100, 203)]
    long = [{"type": "val", "step": s, "psnr": 1.0} for s in (1500, 3000)]
    fig = charts.overlay({"short": short, "long": long}, "psnr", "PSNR", "dB", x="fraction")
    assert [list(t.x) for t in fig.data] == [[100 / 203, 1.0], [0.5, 1.0]]
    assert fig.layout.xaxis.title.text == "fraction of the run"


def test_two_live_codes_are_two_narrow_bars():
    usage = np.zeros(64)
    usage[[3, 40]] = 100
    fig = charts.usage_histogram(usage)
    live = next(t for t in fig.data if t.name == "in use")
    assert list(live.x) == [3, 40] and live.width <= 1.0


def test_log_ticks_are_labelled_in_full():
    assert charts.log_ticks(0.003, 0.5) == [0.01, 0.1]
    assert charts.log_ticks(0.02, 0.06) == [0.02, 0.05]
    fig = charts.loss_curves([{"type": "train", "step": s, "recon": 0.5 / s} for s in range(1, 200)])
    assert list(fig.layout.yaxis.ticktext) == ["0.01", "0.1"]


def _sizes(fig) -> list[float]:
    lay = fig.layout
    sizes = [lay.font.size, lay.legend.font.size, lay.xaxis.tickfont.size, lay.yaxis.tickfont.size,
             lay.xaxis.title.font.size, lay.yaxis.title.font.size]
    sizes += [a.font.size for a in lay.annotations]
    sizes += [t.textfont.size for t in fig.data if getattr(t, "textfont", None) is not None and t.textfont.size]
    return sizes


def test_presenter_mode_text_is_at_least_16px():
    figs = [fg.distance_bars(np.arange(8.0), 2),
            charts.usage_histogram(np.array([5, 3, 0, 1]), sort=True, perplexity=2.5),
            charts.metric_curve([{"type": "val", "step": 1, "psnr": 20.0}], "psnr", "PSNR", "dB", reference=30,
                                reference_name="target")]
    for fig in figs:
        assert min(_sizes(theme.style(fig, big=True))) >= 16
        assert min(_sizes(theme.style(fig, big=False))) < 16      # normal mode keeps the small text


def test_long_titles_wrap_instead_of_being_cut():
    title = "mnist-vq (shipped): codebook usage: 64 of 64 codes alive"
    lines = theme.wrap(title, big=False).split("<br>")
    assert len(lines) == 2 and all(len(line) <= 44 for line in lines)
    assert max(len(line) for line in theme.wrap(title, big=True).split("<br>")) <= 30
    narrow = theme.wrap("a long run label: 14:05, yours, K 64<br>64 of 64 codes alive", big=False, limit=20)
    assert narrow.split("<br>")[-1] == "64 of 64 codes alive" and max(map(len, narrow.split("<br>"))) <= 20


def test_the_model_picker_tells_look_alike_runs_apart(tmp_path):
    from ui.state import run_label
    from vqdemo import runs

    meta = {"kind": "vq", "title": "VQ-VAE K=64 beta=0.25 on mnist", "owner": "a1b2c3d4e5f6"}
    a = runs.RunInfo(tmp_path / "20261123-140501-abc123", meta,
                     {"state": "done", "best": {"k": 64.0, "psnr": 23.41}})
    b = runs.RunInfo(tmp_path / "20261123-141733-def456", {**meta, "owner": "ffff00001111"},
                     {"state": "done", "best": {"k": 48.0, "psnr": 21.0}})
    la, lb = run_label(a), run_label(b)
    assert la != lb
    assert la.startswith("14:05, student a1b2, K 64, 23.4 dB: VQ-VAE")   # the facts first, the title after
    assert lb.startswith("14:17, student ffff, K 48, 21.0 dB")


def test_no_emoji_and_no_internet_assets_in_the_app():
    """A machine without emoji fonts shows boxes; a room without internet shows no remote favicon or font."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    emoji = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u231A-\u23FF\uFE0F]")
    remote = re.compile(r"https?://(?!127\.0\.0\.1|localhost)")
    assets = sorted(p for p in (repo / "ui").rglob("*") if p.suffix in (".html", ".css", ".js"))   # components' files
    for path in [repo / "app.py", *sorted((repo / "views").glob("*.py")), *sorted((repo / "ui").glob("*.py")), *assets]:
        text = path.read_text(encoding="utf-8")
        assert not emoji.findall(text), f"{path.name}: {emoji.findall(text)}"
        assert not remote.findall(text), f"{path.name} fetches from the internet"
    assert "page_icon=FAVICON" in (repo / "app.py").read_text() and (repo / "ui" / "favicon.png").is_file()


def test_usage_bars_keep_each_codes_colour_when_sorted_and_mark_the_perplexity():
    counts = np.array([1.0, 0.0, 7.0, 3.0])
    colors = ["#000001", "#000002", "#000003", "#000004"]
    fig = charts.usage_histogram(counts, sort=True, color=colors, perplexity=2.5)
    live = next(t for t in fig.data if t.name == "in use")
    assert list(live.marker.color) == ["#000003", "#000004", "#000001"]   # codes 2, 3, 0: most used first
    dead = next(t for t in fig.data if t.name == "dead")
    assert list(dead.x) == [3] and set(dead.marker.color) == {theme.DEAD}
    assert fig.layout.shapes[0].x0 == 2.0   # after 2.5 codes of 0-based bars


def test_pictures_grow_with_the_text_in_presenter_mode():
    assert theme.scaled(120, big=False) == 120
    assert theme.scaled(120, big=True) == int(120 * theme.PRESENTER.body / theme.NORMAL.body)


def test_the_layout_test_and_the_readme_cover_every_page_of_the_app():
    """The browser tests' page list is app.py's whole navigation, and each page screenshot that exists under
    docs/img/ is shown in README's lesson section (and nothing it shows is missing)."""
    import re
    from pathlib import Path

    from tests.browser.pages import PAGES

    repo = Path(__file__).resolve().parents[1]
    titles = list(PAGES.values())
    assert len(titles) >= 10 and len(set(titles)) == len(titles) and PAGES[""] == "Learn"   # Learn: the default
    assert all((repo / "views" / f"{path or 'learn'}.py").is_file() for path in PAGES), PAGES
    readme = (repo / "README.md").read_text()
    lesson = readme[readme.index("## Teach it in 45 minutes"):]
    lesson = lesson[:lesson.index("\n## ", 5)]
    shown = set(re.findall(r"\(docs/img/([\w-]+\.png)\)", lesson))
    shots = {p.name for p in (repo / "docs" / "img").glob("*.png") if "prior-samples" not in p.name}
    assert shown == shots, (shots - shown, shown - shots)
    assert all(re.search(rf"\(docs/img/{t.lower()}\.png\)", lesson) for t in titles)   # one per page, at least


def test_titles_of_several_lines_stay_inside_their_figure():
    """Plotly lifts a top-anchored title of two or more lines by about 0.7 of a line (measured in Chromium: the
    first line started 7 px above a 14 px chart's top edge, 13 px above before the pad); the pad pushes it back
    and the top margin holds the pad and every line."""
    for big in (False, True):
        size = theme.fonts(big).title
        one, two = theme.title("a", big), theme.title("a<br>b", big)
        assert two["pad"]["t"] - one["pad"]["t"] >= 0.7 * size - 1
        assert theme.top_margin("a<br>b", False, big) >= two["pad"]["t"] + 2 * 1.3 * size
    long = charts.metric_curve([{"type": "val", "step": 1, "psnr": 20.0}], "psnr",
                               "A title long enough to need two lines at this width", "dB")
    assert "<br>" in long.layout.title.text and long.layout.title.pad.t == theme.title("a<br>b")["pad"]["t"]
    usage = charts.usage_histogram(np.array([5, 3, 0, 1]))
    assert not usage.layout.title.text   # usage charts carry no title: the page says what they show above them


def test_a_highlighted_code_is_outlined_and_the_others_fade_on_every_chart():
    import torch

    counts = np.array([5.0, 0.0, 9.0, 2.0])
    bars = charts.usage_histogram(counts, sort=True, color=["#1f77b4"] * 4, selected=3)
    shown = {int(cd[0]): (w, c) for t in bars.data for cd, w, c in zip(t.customdata, t.marker.line.width,
                                                                        t.marker.color)}
    assert shown[3] == (3, "#1f77b4") and all(w == 0 and c != "#1f77b4" for k, (w, c) in shown.items() if k != 3)
    assert any(a.text == "#3" for a in bars.layout.annotations)
    plain = charts.usage_histogram(counts, sort=True, color=["#1f77b4"] * 4)
    assert not any(a.text == "#3" for a in plain.layout.annotations)

    pts, book = np.random.default_rng(0).normal(size=(20, 2)), np.random.default_rng(1).normal(size=(4, 2))
    point_codes = np.arange(20) % 4
    ringed = fg.map_2d(pts, book, point_codes, -np.ones(20, int), counts, "code", None, selected=2)
    assert [t.name for t in ringed.data][-2:] == ["outputs that picked #2", "code #2"]
    assert len(ringed.data[-2].x) == 5 and list(ringed.data[-1].customdata[0]) == [2, 9]
    assert not any(t.name.startswith("code #") for t in fg.map_2d(pts, book, point_codes, -np.ones(20, int), counts,
                                                                   "code", None).data)

    tiles = torch.rand(4, 1, 8, 8)
    order = np.argsort(-counts, kind="stable")
    assert fg.tile_mosaic(tiles, order, counts, 2, 24, 3).data[0].source != \
        fg.tile_mosaic(tiles, order, counts, 2, 24, None).data[0].source
