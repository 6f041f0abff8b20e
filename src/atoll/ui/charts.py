"""Inline SVG charts for self-contained HTML reports.

Why: reports leave the clean room as files that people open anywhere —
often offline, often inside a locked-down network — so a page must carry its
charts with it: no JavaScript library, no CDN, no web font. Each function
here returns one ``<svg>`` element as :class:`Html` (trusted markup; every
label and value is escaped), sized for a report column and readable in
print. Missing values (cells withheld by the privacy guard) are drawn as
hatched stubs labelled with the reason, never silently dropped.

Charts: :func:`hbar_chart` (horizontal bars with an optional reference line
— TGI bars around 100), :func:`grouped_bar_chart` (model comparison),
:func:`histogram` (frequency distributions), :func:`line_chart` (lift/gain
curves), :func:`province_map` (a tile-grid map of China's provinces, with a
bar fallback for names it does not know). Every chart has the CSS class
``atoll-chart`` and an accessible ``<title>``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "PALETTE",
    "PROVINCE_TILES",
    "Bar",
    "Html",
    "escape",
    "format_number",
    "grouped_bar_chart",
    "hbar_chart",
    "histogram",
    "line_chart",
    "province_map",
]

#: Series colours (colour-blind safe, Okabe–Ito order).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_ABOVE = "#0072B2"
_BELOW = "#D55E00"
_MUTED = "#9AA5B1"
_FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"


class Html(str):
    """A string of trusted markup (page builders insert it as is; plain ``str`` is escaped)."""

    __slots__ = ()


def escape(text: object) -> str:
    """HTML-escape any value's text (quotes included)."""
    return html.escape(str(text), quote=True)


def format_number(value: float | int | None, digits: int = 1, *, percent: bool = False) -> str:
    """A readable number: thousands separators, fixed digits, ``—`` for missing/NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if percent:
        return f"{value * 100:,.{digits}f}%"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: label, value (``None`` = withheld), hover text and an optional side note."""

    label: str
    value: float | None
    tooltip: str = ""
    note: str = ""


def _svg(width: float, height: float, title: str, body: list[str]) -> Html:
    defs = (
        '<defs><pattern id="atoll-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#F2F4F7"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#B8C2CC" stroke-width="2"/></pattern></defs>'
    )
    return Html(
        f'<svg class="atoll-chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'style="{_FONT};font-size:12px" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{defs}" + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(text)}</text>'


def _nice_max(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        if step * exp >= value:
            return float(step * exp)
    return float(10 * exp)


def _ticks(top: float, n: int = 4) -> list[float]:
    return [top * i / n for i in range(n + 1)]


def _fmt(value: float, fmt: str) -> str:
    return fmt.format(value)


def hbar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    reference: float | None = None,
    value_format: str = "{:,.0f}",
    width: int = 640,
    bar_height: int = 18,
    label_width: int = 150,
    color_by_reference: bool = True,
) -> Html:
    """Horizontal bars, one per :class:`Bar`, largest scale first-to-last as given.

    With ``reference`` (e.g. 100 for TGI) a dashed line marks it and bars
    above/below it are coloured differently. Withheld bars (``value`` None)
    are hatched and labelled with their note.
    """
    gap = 6
    top_pad, bottom_pad = 28, 26
    plot_w = width - label_width - 90
    values = [b.value for b in bars if b.value is not None and math.isfinite(b.value)]
    vmax = _nice_max(max([*values, reference or 0.0, 0.0]))
    scale = plot_w / vmax
    height = top_pad + bottom_pad + max(1, len(bars)) * (bar_height + gap)
    body = [_text(0, 16, title, extra='font-weight="600" font-size="13"')]
    x0 = label_width
    for t in _ticks(vmax):
        x = x0 + t * scale
        body.append(
            f'<line x1="{x:.1f}" y1="{top_pad - 4}" x2="{x:.1f}" y2="{height - bottom_pad}" '
            'stroke="#E4E7EB"/>'
        )
        body.append(
            _text(
                x,
                height - bottom_pad + 14,
                _fmt(t, value_format),
                anchor="middle",
                extra='fill="#616E7C" font-size="10"',
            )
        )
    for i, bar in enumerate(bars):
        y = top_pad + i * (bar_height + gap)
        label = bar.label if len(bar.label) <= 24 else bar.label[:23] + "…"
        body.append(_text(x0 - 6, y + bar_height * 0.72, label, anchor="end"))
        tip = f"<title>{escape(bar.tooltip or bar.label)}</title>"
        if bar.value is None or not math.isfinite(bar.value):
            body.append(
                f'<rect class="bar withheld" x="{x0}" y="{y}" width="{plot_w * 0.18:.1f}" '
                f'height="{bar_height}" fill="url(#atoll-hatch)" stroke="#B8C2CC">{tip}</rect>'
            )
            body.append(
                _text(
                    x0 + plot_w * 0.18 + 6,
                    y + bar_height * 0.72,
                    bar.note or "withheld",
                    extra='fill="#7B8794" font-style="italic"',
                )
            )
            continue
        w = max(1.0, bar.value * scale)
        color = PALETTE[0]
        if reference is not None and color_by_reference:
            color = _ABOVE if bar.value >= reference else _BELOW
        body.append(
            f'<rect class="bar" x="{x0}" y="{y}" width="{w:.1f}" height="{bar_height}" '
            f'fill="{color}" rx="2">{tip}</rect>'
        )
        text = _fmt(bar.value, value_format) + (f"  {bar.note}" if bar.note else "")
        body.append(_text(x0 + w + 5, y + bar_height * 0.72, text, extra='fill="#323F4B"'))
    if reference is not None:
        x = x0 + reference * scale
        body.append(
            f'<line class="reference" x1="{x:.1f}" y1="{top_pad - 8}" x2="{x:.1f}" '
            f'y2="{height - bottom_pad}" stroke="#323F4B" stroke-dasharray="4 3"/>'
        )
        body.append(
            _text(
                x,
                top_pad - 10,
                _fmt(reference, value_format),
                anchor="middle",
                extra='fill="#323F4B" font-size="10"',
            )
        )
    return _svg(width, height, title, body)


def grouped_bar_chart(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    value_format: str = "{:,.1f}",
    width: int = 720,
    height: int = 300,
) -> Html:
    """Vertical bars grouped by category, one colour per series, with a legend."""
    names = list(series)
    for name in names:
        if len(series[name]) != len(categories):
            raise ValueError(
                f"series {name!r} has {len(series[name])} values, not {len(categories)}"
            )
    left, right, top, bottom = 56, 12, 44, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    vals = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    vmax = _nice_max(max([*vals, 0.0]))
    body = [_text(0, 16, title, extra='font-weight="600" font-size="13"')]
    for i, name in enumerate(names):
        lx = left + i * 130
        body.append(
            f'<rect x="{lx}" y="24" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
        )
        body.append(_text(lx + 14, 33, name, extra='font-size="11"'))
    for t in _ticks(vmax):
        y = top + plot_h - t / vmax * plot_h
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#E4E7EB"/>'
        )
        body.append(
            _text(
                left - 6,
                y + 4,
                _fmt(t, value_format),
                anchor="end",
                extra='fill="#616E7C" font-size="10"',
            )
        )
    group_w = plot_w / max(1, len(categories))
    bar_w = group_w * 0.8 / max(1, len(names))
    for c, cat in enumerate(categories):
        gx = left + c * group_w + group_w * 0.1
        for s, name in enumerate(names):
            v = series[name][c]
            x = gx + s * bar_w
            if v is None or not math.isfinite(v):
                body.append(
                    f'<rect class="bar withheld" x="{x:.1f}" y="{top + plot_h - 12:.1f}" '
                    f'width="{bar_w:.1f}" height="12" fill="url(#atoll-hatch)">'
                    f"<title>{escape(name)} · {escape(cat)}: withheld</title></rect>"
                )
                continue
            h = max(0.0, v) / vmax * plot_h
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                f"<title>{escape(name)} · {escape(cat)}: {escape(_fmt(v, value_format))}</title>"
                "</rect>"
            )
        body.append(
            _text(
                gx + group_w * 0.4,
                height - bottom + 16,
                cat,
                anchor="middle",
                extra='font-size="11"',
            )
        )
    return _svg(width, height, title, body)


def histogram(
    labels: Sequence[str],
    counts: Sequence[float | None],
    *,
    title: str,
    value_format: str = "{:,.0f}",
    width: int = 640,
    height: int = 260,
) -> Html:
    """Vertical bars of a distribution (e.g. frequency 1, 2, …, 10+)."""
    return grouped_bar_chart(
        labels, {title: counts}, title=title, value_format=value_format, width=width, height=height
    )


def line_chart(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    diagonal: bool = False,
    x_format: str = "{:,.2g}",
    y_format: str = "{:,.2g}",
    width: int = 640,
    height: int = 320,
) -> Html:
    """Lines over a shared x axis (lift and gain curves); ``diagonal`` draws y = x (random)."""
    if not x:
        raise ValueError("line_chart needs at least one x value")
    for name, ys in series.items():
        if len(ys) != len(x):
            raise ValueError(f"series {name!r} has {len(ys)} values for {len(x)} x values")
    left, right, top, bottom = 60, 16, 44, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    xmin, xmax = min(x), max(x)
    xs = xmax - xmin or 1.0
    ys_all = [v for ys in series.values() for v in ys if math.isfinite(v)]
    ymin = min([0.0, *ys_all])
    ymax = _nice_max(max([*ys_all, 0.0] + ([xmax] if diagonal else [])))
    yspan = ymax - ymin or 1.0

    def px(v: float) -> float:
        return left + (v - xmin) / xs * plot_w

    def py(v: float) -> float:
        return top + plot_h - (v - ymin) / yspan * plot_h

    body = [_text(0, 16, title, extra='font-weight="600" font-size="13"')]
    for t in _ticks(ymax - ymin):
        v = ymin + t
        body.append(
            f'<line x1="{left}" y1="{py(v):.1f}" x2="{width - right}" y2="{py(v):.1f}" '
            'stroke="#E4E7EB"/>'
        )
        body.append(
            _text(
                left - 6,
                py(v) + 4,
                _fmt(v, y_format),
                anchor="end",
                extra='fill="#616E7C" font-size="10"',
            )
        )
    for t in _ticks(xs):
        v = xmin + t
        body.append(
            _text(
                px(v),
                top + plot_h + 16,
                _fmt(v, x_format),
                anchor="middle",
                extra='fill="#616E7C" font-size="10"',
            )
        )
    body.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
        'stroke="#9AA5B1"/>'
    )
    if x_label:
        body.append(_text(left + plot_w / 2, height - 6, x_label, anchor="middle"))
    if y_label:
        body.append(
            f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{escape(y_label)}</text>'
        )
    if diagonal:
        body.append(
            f'<line class="diagonal" x1="{px(xmin):.1f}" y1="{py(xmin):.1f}" '
            f'x2="{px(xmax):.1f}" y2="{py(xmax):.1f}" stroke="{_MUTED}" stroke-dasharray="4 3"/>'
        )
    for i, (name, ys) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(
            f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, ys, strict=True) if math.isfinite(b)
        )
        body.append(
            f'<path class="line" d="M {points.replace(" ", " L ")}" fill="none" '
            f'stroke="{color}" stroke-width="2"><title>{escape(name)}</title></path>'
        )
        lx = left + 8 + i * 140
        body.append(f'<rect x="{lx}" y="24" width="10" height="10" fill="{color}"/>')
        body.append(_text(lx + 14, 33, name, extra='font-size="11"'))
    return _svg(width, height, title, body)


#: Tile-grid positions (row, column) of China's provinces, roughly geographic.
PROVINCE_TILES: dict[str, tuple[int, int]] = {
    "Heilongjiang": (0, 9),
    "Inner Mongolia": (1, 6),
    "Jilin": (1, 9),
    "Xinjiang": (2, 1),
    "Beijing": (2, 7),
    "Liaoning": (2, 9),
    "Tianjin": (2, 8),
    "Gansu": (3, 3),
    "Ningxia": (3, 4),
    "Shanxi": (3, 6),
    "Hebei": (3, 7),
    "Shandong": (3, 8),
    "Qinghai": (4, 2),
    "Shaanxi": (4, 5),
    "Henan": (4, 6),
    "Anhui": (4, 7),
    "Jiangsu": (4, 8),
    "Shanghai": (4, 9),
    "Tibet": (5, 1),
    "Sichuan": (5, 3),
    "Chongqing": (5, 4),
    "Hubei": (5, 6),
    "Jiangxi": (5, 7),
    "Zhejiang": (5, 8),
    "Yunnan": (6, 3),
    "Guizhou": (6, 4),
    "Hunan": (6, 5),
    "Fujian": (6, 7),
    "Taiwan": (6, 9),
    "Guangxi": (7, 4),
    "Guangdong": (7, 6),
    "Hong Kong": (7, 7),
    "Macau": (8, 6),
    "Hainan": (8, 4),
}


def province_map(
    values: Mapping[str, float | None],
    *,
    title: str,
    reference: float | None = 100.0,
    value_format: str = "{:,.0f}",
    width: int = 560,
) -> Html:
    """A tile-grid map of China's provinces coloured by value, or bars if names are unknown.

    With ``reference`` (TGI 100), tiles above it are blue, below orange,
    with intensity growing with the distance; tiles without a value are
    grey (withheld or absent). When fewer than half the names are known
    provinces, a :func:`hbar_chart` is returned instead.
    """
    known = [name for name in values if name in PROVINCE_TILES]
    if not values or len(known) * 2 < len(values):
        bars = [Bar(k, v) for k, v in sorted(values.items(), key=lambda kv: -(kv[1] or 0))]
        return hbar_chart(bars, title=title, reference=reference, value_format=value_format)
    cols, rows = 10, 9
    cell = (width - 20) / cols
    top = 30
    height = top + rows * cell + 40
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
    ref = reference if reference is not None else (sum(finite) / len(finite) if finite else 0.0)
    spread = max([abs(v - ref) for v in finite] + [1e-9])
    body = [_text(0, 16, title, extra='font-weight="600" font-size="13"')]
    for name, (r, c) in PROVINCE_TILES.items():
        x, y = 10 + c * cell, top + r * cell
        v = values.get(name)
        if v is None or not math.isfinite(v):
            fill, opacity, label = "#E4E7EB", 1.0, "—"
        else:
            fill = _ABOVE if v >= ref else _BELOW
            opacity = 0.15 + 0.85 * min(1.0, abs(v - ref) / spread)
            label = _fmt(v, value_format)
        short = name if len(name) <= 9 else name[:8] + "…"
        body.append(
            f'<rect class="tile" x="{x + 1:.1f}" y="{y + 1:.1f}" width="{cell - 2:.1f}" '
            f'height="{cell - 2:.1f}" fill="{fill}" fill-opacity="{opacity:.2f}" rx="3">'
            f"<title>{escape(name)}: {escape(label)}</title></rect>"
        )
        body.append(
            _text(
                x + cell / 2,
                y + cell * 0.42,
                short,
                anchor="middle",
                extra='font-size="9" fill="#1F2933"',
            )
        )
        body.append(
            _text(
                x + cell / 2,
                y + cell * 0.72,
                label,
                anchor="middle",
                extra='font-size="10" font-weight="600" fill="#1F2933"',
            )
        )
    legend_y = top + rows * cell + 20
    body.append(f'<rect x="10" y="{legend_y - 10}" width="12" height="12" fill="{_ABOVE}"/>')
    body.append(_text(26, legend_y, f"above {_fmt(ref, value_format)}", extra='font-size="11"'))
    body.append(f'<rect x="130" y="{legend_y - 10}" width="12" height="12" fill="{_BELOW}"/>')
    body.append(_text(146, legend_y, f"below {_fmt(ref, value_format)}", extra='font-size="11"'))
    body.append(f'<rect x="250" y="{legend_y - 10}" width="12" height="12" fill="#E4E7EB"/>')
    body.append(_text(266, legend_y, "withheld or none", extra='font-size="11"'))
    others = sorted(set(values) - set(PROVINCE_TILES))
    if others:
        body.append(
            _text(
                380,
                legend_y,
                f"not on map: {', '.join(others)[:60]}",
                extra='font-size="10" fill="#616E7C"',
            )
        )
    return _svg(width, height, title, body)
