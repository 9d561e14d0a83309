"""The blocks a report page is made of (paragraphs, notes, tables, figures, links, sections) and their HTML and Markdown renderers.

The HTML page is self-contained: figures are embedded as data URIs, so report.html can be
mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

from stress.artifacts import RunFolder

MISSING = "—"


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Note:
    text: str  # e.g. "stage stress did not run"


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the run folder: figures/<name>.png
    caption: str


@dataclass(frozen=True)
class Links:
    items: tuple[tuple[str, str], ...]  # (label, path relative to the run folder), e.g. a seed's own report.html


@dataclass(frozen=True)
class Widget:
    html: str  # trusted markup of our own (the failure browser), inserted as it is
    markdown: str  # what report.md says in its place


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    blocks: tuple


def make_table(headers, rows) -> Table:
    """A Table block from any cells (each becomes its str)."""
    return Table(tuple(str(h) for h in headers), tuple(tuple(str(c) for c in row) for row in rows))


# -- rendering ----------------------------------------------------------------
CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;color:#1b1b1b;background:#fff;margin:0}
main{max-width:1100px;margin:0 auto;padding:1rem}
h1{font-size:1.6rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
nav a{margin-right:.8rem;white-space:nowrap}
.table-wrap{overflow-x:auto;margin:.8rem 0}
table{border-collapse:collapse;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td{overflow-wrap:break-word}
figure{margin:1rem 0}
img{max-width:100%;height:auto;display:block}
figcaption{font-size:.85rem;color:#555}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.4rem .6rem}
.missing{color:#a00}
@page{size:A4;margin:14mm 12mm}
@media print{
 body{font-size:10pt}main{max-width:none;padding:0}nav{display:none}
 h2,h3,h4{break-after:avoid}
 figure,img,.note{break-inside:avoid}
 .table-wrap{overflow:visible}table{width:100%;font-size:8pt}tr{break-inside:avoid}thead{display:table-header-group}
 a{color:inherit;text-decoration:none}
}
"""


# Every table sorts by a click on a column header: numbers by value (the first number in the cell, so
# "0.731 [0.72, 0.74]" sorts by 0.731 and "+2.4 points" by 2.4), other cells as text; a second click reverses.
SORT_JS = r"""
(function () {
  const key = (cell) => { const m = cell.textContent.replace(/[−–]/g, '-').match(/[-+]?\d*\.?\d+(e[-+]?\d+)?/i);
                          return m ? [0, parseFloat(m[0])] : [1, cell.textContent.trim().toLowerCase()]; };
  document.querySelectorAll('main table').forEach((table) => {
    const head = table.tHead, body = table.tBodies[0];
    if (!head || !body || body.rows.length < 2) return;
    Array.from(head.rows[0].cells).forEach((th, column) => {
      th.tabIndex = 0; th.style.cursor = 'pointer'; th.title = 'sort by this column';
      const sort = () => {
        const ascending = th.getAttribute('aria-sort') !== 'ascending';
        Array.from(head.rows[0].cells).forEach((c) => c.removeAttribute('aria-sort'));
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        const rows = Array.from(body.rows).map((row, i) => [key(row.cells[column] || row.cells[0]), i, row]);
        const order = (a, b) => (a < b ? -1 : a > b ? 1 : 0), sign = ascending ? 1 : -1;  // cells without a number stay last
        rows.sort((a, b) => (a[0][0] - b[0][0]) || sign * order(a[0][1], b[0][1]) || a[1] - b[1]);
        rows.forEach((r) => body.appendChild(r[2]));
      };
      th.addEventListener('click', sort);
      th.addEventListener('keydown', (e) => { if (e.key === 'Enter') sort(); });
    });
  });
})();
"""


def _anchor(figure_path: str) -> str:
    return "fig-" + figure_path.removeprefix("figures/").removesuffix(".png").replace("/", "-")


def _is_figure_path(text: str) -> bool:
    return text.startswith("figures/") and text.endswith(".png") and " " not in text


def _html_cell(text: str) -> str:
    # A figure path in a table (the observations' figure column) links to that figure in the page.
    return f'<a href="#{_anchor(text)}">{html.escape(text)}</a>' if _is_figure_path(text) else html.escape(text)


def _html_block(block, run: RunFolder) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Note):
        return f'<p class="note">{html.escape(block.text)}</p>'
    if isinstance(block, Widget):
        return block.html
    if isinstance(block, Links):
        return "<ul>" + "".join(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>' for label, href in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
        body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    path = run.path(*block.path.split("/"))
    anchor = _anchor(block.path)
    if not path.is_file():
        return f'<p class="note missing" id="{anchor}">figure {html.escape(block.path)} was not drawn</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(block.caption)
    return f'<figure id="{anchor}"><img src="data:image/png;base64,{data}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def render_html(sections: list[Section], run: RunFolder, title: str) -> str:
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>\n' + "\n".join(_html_block(b, run) for b in s.blocks) + "</section>"
        for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<link rel=\"icon\" href=\"data:,\"><title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
            f"<body><main><h1>{html.escape(title)}</h1><nav>{nav}</nav>\n{body}\n</main><script>{SORT_JS}</script></body></html>\n")


def _md_cell(text: str) -> str:
    if _is_figure_path(text):
        return f"[{text.removeprefix('figures/')}]({text})"
    return text.replace("|", "\\|").replace("\n", " ")


def _md_block(block, run: RunFolder) -> str:
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Note):
        return f"> **Note:** {block.text}"
    if isinstance(block, Widget):
        return block.markdown
    if isinstance(block, Links):
        return "\n".join(f"- [{label}]({href})" for label, href in block.items)
    if isinstance(block, Table):
        lines = ["| " + " | ".join(map(_md_cell, block.headers)) + " |", "|" + "---|" * len(block.headers)]
        lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
        return "\n".join(lines)
    if not run.path(*block.path.split("/")).is_file():
        return f"> figure {block.path} was not drawn"
    return f"![{block.caption}]({block.path})\n\n*{block.caption}*"


def render_markdown(sections: list[Section], run: RunFolder, title: str) -> str:
    parts = [f"# {title}"]
    for s in sections:
        parts.append(f"## {s.title}")
        parts += [_md_block(b, run) for b in s.blocks]
    return "\n\n".join(parts) + "\n"
