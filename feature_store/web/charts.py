"""The small distribution charts of the catalog page, as geometry for an inline SVG (drawn by the
template's `chart` macro): a feature's histogram from its last run's statistics, or its top values
for a string feature. Plain data in, plain data out."""

from __future__ import annotations

from datetime import datetime

WIDTH, HEIGHT = 520, 84  # the chart's drawing area, in SVG user units
GAP = 2  # between bars
LABEL_SPACE = 16  # below the bars, for the axis labels


def value_text(value, data_type: str) -> str:
    """A statistic in the feature's own form, as the page writes it: whole numbers with thousands
    separators, other numbers rounded (to units from 1,000 on, else to 4 significant digits),
    instants to the second (UTC)."""
    if value is None:
        return "—"
    if data_type == "datetime" and isinstance(value, str):
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def histogram(statistics: dict) -> dict | None:
    """Bars of the last run's histogram (`edges`, `counts`), scaled to the chart; None when the
    statistics have none (a string feature, or no value to bin)."""
    found = statistics.get("histogram")
    if not found or not found.get("counts"):
        return None
    edges, counts, data_type = found["edges"], found["counts"], statistics["data_type"]
    tallest = max(counts) or 1
    slot = WIDTH / len(counts)
    bars = []
    for n, count in enumerate(counts):
        height = round((HEIGHT - LABEL_SPACE) * count / tallest, 1)
        bars.append({"x": round(n * slot + GAP / 2, 1), "y": round(HEIGHT - LABEL_SPACE - height, 1),
                     "width": round(max(slot - GAP, 1), 1), "height": height, "count": count,
                     "title": f"{value_text(edges[n], data_type)} to {value_text(edges[n + 1], data_type)}: "
                              f"{count:,}"})
    return {"kind": "histogram", "width": WIDTH, "height": HEIGHT, "bars": bars, "baseline": HEIGHT - LABEL_SPACE,
            "low": value_text(edges[0], data_type), "high": value_text(edges[-1], data_type),
            "label_y": HEIGHT - 3}


def top_values(statistics: dict) -> dict | None:
    """One horizontal bar per top value of a string feature, its length its share of the values
    counted; None without top values."""
    found = statistics.get("top_values")
    if not found:
        return None
    total = statistics.get("count") or 1
    row = 18
    label_width = 130
    bars = []
    for n, item in enumerate(found):
        length = round((WIDTH - label_width - 70) * item["count"] / total, 1)
        bars.append({"y": n * row + 2, "height": row - 5, "x": label_width, "width": max(length, 1),
                     "label": str(item["value"]), "count": item["count"], "text_y": n * row + 13,
                     "share": f"{item['count'] / total:.1%}"})
    return {"kind": "top_values", "width": WIDTH, "height": len(bars) * row + 2, "bars": bars,
            "label_width": label_width}
