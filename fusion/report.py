"""Audit report: PNG plots (AGB map, totals bar chart, difference map) and Markdown + HTML reports.

Plots use matplotlib's object API (``Figure`` + Agg canvas: no pyplot global state, safe in
workers), read rasters decimated to at most ``max_pixels`` (through GeoTIFF overviews when
present), and are written atomically with a fixed size of ``figsize x dpi`` pixels.
The HTML report is self-contained (PNG figures embedded as base64 data URIs); the Markdown report
links the PNGs by relative path. Both hold every table given, the notes and the run manifest.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from rasterio.enums import Resampling

from waveform.errors import RasterError, SawaFileError, SawaValueError
from waveform.outputs import atomic_path, write_text_atomic

#: Default figure size (inches) and resolution: 1000 x 600 pixel PNGs.
FIGSIZE_IN = (10.0, 6.0)
DPI = 100
#: Largest number of raster cells drawn in a map (decimated read above it).
MAX_MAP_PIXELS = 1_000_000


# --- helpers -----------------------------------------------------------------------------------
def format_value(value: Any) -> str:
    """Table cell text: thousands separators for large numbers, 4 significant digits otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if abs(v) >= 1e5:
            return f"{v:,.0f}"
        if v == 0:
            return "0"
        return f"{v:.4g}"
    return str(value)


def _read_decimated(path: str | os.PathLike, max_pixels: int) -> tuple[np.ndarray, tuple[float, float, float, float], Any]:
    path = Path(path)
    if not path.is_file():
        raise SawaFileError(f"raster {path} does not exist")
    try:
        with rasterio.open(path) as src:
            step = max(1.0, math.sqrt(src.width * src.height / max_pixels))
            shape = (max(1, int(src.height / step)), max(1, int(src.width / step)))
            data = src.read(1, out_shape=shape, masked=True, resampling=Resampling.average)
            b = src.bounds
            return data.astype(np.float64).filled(np.nan), (b.left, b.right, b.bottom, b.top), src.crs
    except rasterio.errors.RasterioIOError as exc:
        raise SawaFileError(f"cannot read raster {path}: {exc}") from exc


def _new_figure(figsize=FIGSIZE_IN, dpi=DPI) -> Figure:
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str | os.PathLike) -> Path:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return Path(out_png)


def _outlines(ax, countries, crs, extent) -> None:
    if countries is None:
        return
    gdf = countries if isinstance(countries, gpd.GeoDataFrame) else gpd.read_file(countries)
    if gdf.crs is None:
        raise SawaValueError("country outlines have no CRS")
    if crs is not None:
        gdf = gdf.to_crs(crs)
    left, right, bottom, top = extent
    gdf = gdf.cx[left:right, bottom:top]
    if len(gdf):
        gdf.boundary.plot(ax=ax, color="black", linewidth=0.6)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)


def _axis_labels(ax, crs) -> None:
    if crs is not None and crs.is_geographic:
        ax.set_xlabel("longitude (deg)")
        ax.set_ylabel("latitude (deg)")
    else:
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")


def _map_png(data, extent, crs, countries, title: str, colorbar_label: str, out_png, figsize, dpi,
             **imshow) -> Path:
    """A raster map with country outlines, axis labels, title and a labelled colour bar, saved as PNG."""
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data, extent=extent, origin="upper", interpolation="nearest", **imshow)
    _outlines(ax, countries, crs, extent)
    _axis_labels(ax, crs)
    ax.set_title(title)
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label(colorbar_label)
    return _save(fig, out_png)


# --- plots -------------------------------------------------------------------------------------
def plot_agb_map(agb_path: str | os.PathLike, out_png: str | os.PathLike, countries=None, *,
                 title: str = "Above-ground biomass density", units: str = "Mg/ha",
                 vmax: float | None = None, max_pixels: int = MAX_MAP_PIXELS,
                 figsize=FIGSIZE_IN, dpi: int = DPI) -> Path:
    """AGB map (GeoTIFF band 1) with country outlines and a colour bar in ``units``."""
    data, extent, crs = _read_decimated(agb_path, max_pixels)
    finite = data[np.isfinite(data)]
    if vmax is None:
        vmax = float(np.nanpercentile(finite, 99)) if finite.size else 1.0
    return _map_png(data, extent, crs, countries, title, f"AGB ({units})", out_png, figsize, dpi,
                    cmap="YlGn", vmin=0.0, vmax=max(vmax, 1e-9))


def plot_difference_map(sawa_path: str | os.PathLike, uncorrected_path: str | os.PathLike,
                        out_png: str | os.PathLike, countries=None, *,
                        title: str = "SAWA minus uncorrected AGB", units: str = "Mg/ha",
                        max_pixels: int = MAX_MAP_PIXELS, figsize=FIGSIZE_IN, dpi: int = DPI) -> Path:
    """Map of (SAWA-corrected - uncorrected) AGB on a diverging scale centred on zero."""
    with rasterio.open(sawa_path) as a, rasterio.open(uncorrected_path) as b:
        if (a.width, a.height) != (b.width, b.height) or a.transform != b.transform or a.crs != b.crs:
            raise RasterError(
                f"difference map: {sawa_path} and {uncorrected_path} are not on the same grid "
                f"({a.width}x{a.height} {a.crs} vs {b.width}x{b.height} {b.crs})"
            )
    da, extent, crs = _read_decimated(sawa_path, max_pixels)
    db, _, _ = _read_decimated(uncorrected_path, max_pixels)
    diff = da - db
    finite = np.abs(diff[np.isfinite(diff)])
    lim = float(np.percentile(finite, 98)) if finite.size else 1.0
    lim = lim if lim > 0 else 1.0
    return _map_png(diff, extent, crs, countries, title, f"AGB difference ({units})", out_png, figsize, dpi,
                    cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim))


def plot_totals_bar(table: pd.DataFrame, out_png: str | os.PathLike, *, id_col: str = "iso3",
                    max_countries: int = 25, title: str = "AGB per country: ours vs FAO FRA 2020 vs GEDI",
                    figsize=FIGSIZE_IN, dpi: int = DPI) -> Path:
    """Grouped bars per country: ours (+-1 SE, fully correlated), FAO and GEDI AGB in Pg.

    ``table`` is :func:`fusion.references.compare_totals` output (``agb_pg``, optional
    ``agb_se_pg``, ``fao_agb_pg``, ``gedi_agb_pg``); the ``max_countries`` largest are drawn.
    """
    if id_col not in table.columns or "agb_pg" not in table.columns:
        raise SawaValueError(f"bar chart needs columns {id_col!r} and 'agb_pg'; has {list(table.columns)}")
    t = table.sort_values("agb_pg", ascending=False).head(max_countries)
    series = [("ours", "agb_pg", "#2b8cbe")]
    for label, col, color in (("FAO FRA 2020", "fao_agb_pg", "#fdae6b"), ("GEDI", "gedi_agb_pg", "#74c476")):
        if col in t.columns and t[col].notna().any():
            series.append((label, col, color))
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(t))
    width = 0.8 / len(series)
    for k, (label, col, color) in enumerate(series):
        vals = t[col].to_numpy(float)
        err = t["agb_se_pg"].to_numpy(float) if (col == "agb_pg" and "agb_se_pg" in t.columns) else None
        known = np.isfinite(vals)                       # a missing reference draws no bar (not a 0 bar)
        ax.bar(x[known] + (k - (len(series) - 1) / 2) * width, vals[known], width, label=label, color=color,
               yerr=None if err is None else np.nan_to_num(err[known]), capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels(t[id_col].astype(str), rotation=90 if len(t) > 12 else 0)
    ax.set_ylabel("AGB (Pg)")
    ax.set_title(title)
    ax.legend()
    fig.subplots_adjust(bottom=0.18)
    return _save(fig, out_png)


# --- reports -----------------------------------------------------------------------------------
def write_table_csv(df: pd.DataFrame, path: str | os.PathLike, float_format: str = "%.6g") -> Path:
    """Write a table as UTF-8 CSV atomically (e.g. ``country_totals.csv``)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format, encoding="utf-8", lineterminator="\n")
    return Path(path)



def _md_table(df: pd.DataFrame, max_rows: int) -> str:
    d = df.head(max_rows)
    cols = [str(c) for c in d.columns]
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in d.itertuples(index=False):
        lines.append("| " + " | ".join(esc(format_value(v)) for v in row) + " |")
    if len(df) > max_rows:
        lines.append(f"\n({len(df) - max_rows} more rows not shown)")
    return "\n".join(lines)


def _html_table(df: pd.DataFrame, max_rows: int) -> str:
    d = df.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in d.columns)
    body = []
    for row in d.itertuples(index=False):
        cells = []
        for v in row:
            cls = ' class="num"' if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{html.escape(format_value(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>({len(df) - max_rows} more rows not shown)</p>" if len(df) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}th,td{border:1px solid #bbb;padding:3px 6px}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:0.8em}"""


def write_report(out_dir: str | os.PathLike, tables: Mapping[str, pd.DataFrame],
                 figures: Mapping[str, str | os.PathLike] | None = None,
                 manifest: Mapping[str, Any] | None = None, *, title: str = "sawa carbon audit",
                 notes: Sequence[str] | Mapping[str, str] | None = None, max_rows: int = 300,
                 basename: str = "report", stamp: str | None = "now") -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir`` (atomically).

    ``tables``: section title -> DataFrame. ``figures``: caption -> PNG path (must exist).
    ``notes``: bullet points (or title -> text) shown before the tables (assumptions, checks).
    ``manifest``: the run manifest (inputs with sha256, parameters, versions), appended as JSON.
    ``stamp``: "now" writes the current UTC time under the title, a string writes that text, None
    writes no time (reruns then give byte-identical reports).
    """
    out_dir = Path(out_dir)
    figures = dict(figures or {})
    for caption, p in figures.items():
        if not Path(p).is_file():
            raise SawaFileError(f"report figure {caption!r}: {p} does not exist")
        with open(p, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                raise SawaFileError(f"report figure {caption!r}: {p} is not a PNG file")
    if stamp == "now":
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    note_items = list(notes.items()) if isinstance(notes, Mapping) else [(None, n) for n in (notes or [])]
    manifest_text = json.dumps(manifest, indent=2, sort_keys=True, default=str) if manifest else ""

    md = [f"# {title}", ""] + ([f"Written {stamp}.", ""] if stamp else [])
    if note_items:
        md += ["## Notes", ""] + [f"- **{k}**: {v}" if k else f"- {v}" for k, v in note_items] + [""]
    for caption, p in figures.items():
        rel = os.path.relpath(Path(p).resolve(), out_dir.resolve())
        md += [f"## {caption}", "", f"![{caption}]({Path(rel).as_posix()})", ""]
    for name, df in tables.items():
        md += [f"## {name}", "", _md_table(df, max_rows), ""]
    if manifest_text:
        md += ["## Manifest", "", "```json", manifest_text, "```", ""]

    h = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
         f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"] + ([f"<p>Written {html.escape(stamp)}.</p>"] if stamp else [])
    if note_items:
        h.append("<h2>Notes</h2><ul>")
        h += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" if k else f"<li>{html.escape(v)}</li>" for k, v in note_items]
        h.append("</ul>")
    for caption, p in figures.items():
        b64 = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        h.append(f"<h2>{html.escape(caption)}</h2><figure><img alt=\"{html.escape(caption)}\" "
                 f"src=\"data:image/png;base64,{b64}\"><figcaption>{html.escape(caption)}</figcaption></figure>")
    for name, df in tables.items():
        h.append(f"<h2>{html.escape(name)}</h2>{_html_table(df, max_rows)}")
    if manifest_text:
        h.append(f"<h2>Manifest</h2><pre>{html.escape(manifest_text)}</pre>")
    h.append("</body></html>")

    md_path = write_text_atomic(out_dir / f"{basename}.md", "\n".join(md))
    html_path = write_text_atomic(out_dir / f"{basename}.html", "\n".join(h))
    return {"markdown": md_path, "html": html_path}


__all__ = [
    "write_table_csv",
    "format_value",
    "plot_agb_map",
    "plot_difference_map",
    "plot_totals_bar",
    "write_report",
]
