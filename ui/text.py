"""User text shown as text: run titles, class names from a zip, file names, owner ids.

Students type titles and name the folders of their zips, and every page shows them to the whole class. Streamlit
renders markdown in st.markdown, captions, alerts, metrics, image captions and widget labels, and Plotly renders
a subset of HTML (<a href>, <b>, <span style>) in titles, legends, annotations and hover text. A title such as
`[answers](URL) ![t](URL/t.png)` would otherwise become a live link and an image that every other
student's browser fetches. Every user string goes through `md` (Streamlit) or `plotly` (figures) here; `plain`
is the cleaning both share, and what plain-text places (dataframes, selectbox options) get.
"""

from __future__ import annotations

import html
import re
from typing import Any

MAX_CHARS = 120
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]+")  # incl. bidi overrides
_JOINER = "\u2060"   # WORD JOINER: invisible, and not a URL character
_AUTOLINK = re.compile(r"://|(?i:www)\.|@")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!|<>~$])")   # links, images, emphasis, code, HTML, tables, LaTeX, :red[..]
_MD_LIST = re.compile(r"^(\s*)([-+]|\d+)(\.?)(?=\s)")            # a list marker where the text starts a line


def plain(value: Any, limit: int = MAX_CHARS) -> str:
    """One line of at most `limit` characters: control and bidi-override characters become spaces."""
    text = _CONTROL.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def md(value: Any, limit: int = MAX_CHARS) -> str:
    """For anything Streamlit renders as markdown: the markdown and HTML metacharacters backslash-escaped, so
    links, images, emphasis, code, tables, colour shortcodes (:red[...]) and LaTeX ($) stay literal text.
    Escaping does not stop GitHub-style autolinks (http(s) addresses, www...., a@b.c are linked after escapes are
    read), so an invisible word joiner splits those patterns."""
    text = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + _JOINER + m.group(0)[-1], plain(value, limit))
    return _MD_LIST.sub(_unlist, _MD_SPECIAL.sub(r"\\\1", text))


def _unlist(m: re.Match) -> str:
    """'- x' -> '\\- x', '1. x' -> '1\\. x': a leading list marker stays text."""
    indent, mark, dot = m.groups()
    return indent + (mark + "\\." if dot else ("\\" + mark if not mark.isdigit() else mark))


def plotly(value: Any, limit: int = MAX_CHARS) -> str:
    """For Plotly titles, legends, annotations and hover text: HTML-escaped (Plotly shows entities as characters,
    so `<a href=...>` is drawn as those characters, not as a link)."""
    return html.escape(plain(value, limit), quote=True)


def plotly_template(value: Any, limit: int = MAX_CHARS) -> str:
    """Like `plotly`, for text inside a hovertemplate: its %{...} placeholders escaped too."""
    return plotly(value, limit).replace("%", "&#37;")
