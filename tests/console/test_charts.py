"""Server-drawn SVG bar charts: one bar per row, lengths in proportion, each figure written out exactly."""

from console.charts import BAR_WIDTH, Bar, bar_chart


def test_bars_are_proportional_and_carry_their_figures():
    svg = str(bar_chart("Unsold <value>", [Bar("H01", 500000, "5000.00"), Bar("H02", 250000, "2500.00"), Bar("H<3>", 0, "0.00")]))
    assert svg.count('class="bar"') == 3
    assert f'width="{BAR_WIDTH}"' in svg and f'width="{BAR_WIDTH // 2}"' in svg and 'width="0"' in svg
    assert 'data-value="500000"' in svg and ">5000.00<" in svg
    assert "Unsold &lt;value&gt;" in svg and "H&lt;3&gt;" in svg and "style=" not in svg and "<script" not in svg


def test_an_empty_chart_is_still_a_valid_svg():
    svg = str(bar_chart("nothing", []))
    assert svg.startswith("<svg") and svg.endswith("</svg>") and 'class="bar"' not in svg
