"""Bar charts drawn on the server as SVG, from the same rows the tables and the CLI's ``--json`` show.

No JavaScript and no inline style (the content-security policy allows
neither): the SVG uses presentation attributes only, and every bar carries
its exact figure as text, so what the chart says can be read and compared
to the fen.
"""

# test-case-name: tests.console.test_charts

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

BAR_HEIGHT = 22
GAP = 6
LABEL_WIDTH = 140
BAR_WIDTH = 320
VALUE_WIDTH = 120
TITLE_HEIGHT = 28


def _named(name: str) -> str:
    return f' id="chart-{escape(name)}" data-chart="{escape(name)}"' if name else ""


@dataclass(frozen=True)
class Bar:
    label: str
    value: int  # the figure the bar's length is drawn from (cards, or fen)
    text: str  # how the figure is written beside the bar (yuan for money)


def bar_chart(title: str, bars: Sequence[Bar], name: str = "") -> Markup:
    """A horizontal bar chart with one bar per entry; an empty chart says so in its title alone.

    ``name`` (when given) is the chart's ``id`` (``chart-<name>``) and ``data-chart``, so a reader can pick it out.
    """
    top = max((b.value for b in bars), default=0)
    height = TITLE_HEIGHT + max(1, len(bars)) * (BAR_HEIGHT + GAP) + GAP
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    parts = [
        f'<svg class="chart"{_named(name)} xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="8" y="20" font-size="14" font-weight="bold" fill="#222">{escape(title)}</text>',
    ]
    for i, bar in enumerate(bars):
        y = TITLE_HEIGHT + GAP + i * (BAR_HEIGHT + GAP)
        length = 0 if top <= 0 else max(1, round(BAR_WIDTH * max(bar.value, 0) / top)) if bar.value > 0 else 0
        mid = y + BAR_HEIGHT // 2 + 5
        parts.append(
            f'<g class="bar" data-label="{escape(bar.label)}" data-value="{bar.value}">'
            f'<text x="{LABEL_WIDTH - 8}" y="{mid}" text-anchor="end" font-size="13" fill="#222">{escape(bar.label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length}" height="{BAR_HEIGHT}" fill="#2f6f9f"/>'
            f'<text x="{LABEL_WIDTH + length + 6}" y="{mid}" font-size="13" fill="#222">{escape(bar.text)}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
