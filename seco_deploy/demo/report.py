"""A static HTML report (one file, PNGs embedded as base64): tables, curves, image grids.

``Report`` collects sections (``id``, title, HTML body) and ``render()`` returns the page. The
section builders below turn the demo's figures into HTML:

- :func:`miou_section`: one row per product (CAM pseudo-labels, aux CAM, decoder masks);
- :func:`per_class_section`: IoU and FP:TP per class and product;
- :func:`cooccurrence_section`: context / partner false activation per coupled class;
- :func:`curves_section`: training curves (matplotlib) or a note that plots need the extra;
- :func:`grid_section`: image | ground truth | CAM heatmap | pseudo-label | mask rows;
- :func:`comparison_section`: baseline vs SeCo heatmaps and pseudo-labels side by side.

Every section carries ``id="..."`` (the ids in :data:`DEMO_SECTIONS`) so tests and readers can
find it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seco_deploy.demo.images import colourise, data_uri, fit, png_bytes, read_rgb

__all__ = [
    "DEMO_SECTIONS",
    "Report",
    "comparison_section",
    "cooccurrence_section",
    "curves_section",
    "fmt_pct",
    "fmt_ratio",
    "grid_section",
    "miou_section",
    "per_class_section",
    "table",
]

DEMO_SECTIONS = ("summary", "miou", "per-class", "cooccurrence", "chain", "curves", "examples")

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#222;background:#fff;padding:0 16px}
h1{font-size:26px;margin-bottom:4px} h2{font-size:20px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right} th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:13px;max-width:900px}
.bad{color:#b00020;font-weight:600} .good{color:#0a7a2f;font-weight:600}
.grid td{padding:2px;border:none;text-align:center;vertical-align:top}
.grid th{border:none;background:none;font-size:13px;text-align:center}
.kv td{text-align:left}
.grid img{display:block;border:1px solid #ddd}
.legend span{display:inline-block;margin-right:12px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;border:1px solid #999}
code{background:#f6f6f6;padding:1px 4px}
pre{font-size:12px;overflow-x:auto;background:#fafafa;padding:8px;border:1px solid #eee}
"""


def esc(text: Any) -> str:
    return html.escape(str(text))


def fmt_pct(x: float | None) -> str:
    """Fraction -> "53.2" (percent), "-" for None/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}"


def fmt_ratio(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False, css: str = "") -> str:
    """An HTML table; cells are escaped unless ``raw``; ``css`` is its class attribute."""
    cell = (lambda v: str(v)) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    cls = f' class="{esc(css)}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img(array: np.ndarray, alt: str = "") -> str:
    return f'<img src="{data_uri(png_bytes(array))}" alt="{esc(alt)}">'


@dataclass
class Report:
    title: str
    subtitle: str = ""
    sections: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, section_id: str, title: str, body: str) -> None:
        self.sections.append((section_id, title, body))

    def render(self) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{esc(self.title)}</h1>",
        ]
        if self.subtitle:
            parts.append(f'<p class="note">{self.subtitle}</p>')
        for sid, title, body in self.sections:
            parts.append(f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{body}</section>')
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, path: str | Path) -> Path:
        from seco_deploy.data.io import atomic_write_text

        atomic_write_text(Path(path), self.render())
        return Path(path)


# ---------------------------------------------------------------------------- sections
def miou_section(products: dict[str, dict[str, Any]]) -> str:
    """``products``: label -> {"scores": score_folder(...) output, "split": str, "how": str}."""
    rows = [
        (label, p["split"], p["scores"]["images"], fmt_pct(p["scores"]["miou"]), p["how"])
        for label, p in products.items()
    ]
    return table(["product", "split", "images", "mIoU (%)", "how it was made"], rows) + (
        '<p class="note">mIoU over the classes present in the ground truth (background included). '
        "Pseudo-labels use the images' true tags (the product SeCo makes for training a segmenter); "
        "decoder masks use no tags.</p>"
    )


def per_class_section(products: dict[str, dict[str, Any]]) -> str:
    labels = list(products)
    first = next(iter(products.values()))["scores"]["classes"]
    headers = ["class"]
    for label in labels:
        headers += [f"{label} IoU", f"{label} FP:TP"]
    rows = []
    for k, row in enumerate(first):
        cells = [row["name"]]
        for label in labels:
            c = products[label]["scores"]["classes"][k]
            cells += [fmt_pct(c["iou"]) if c["present"] else "-", fmt_ratio(c["fp_tp"])]
        rows.append(cells)
    return table(headers, rows) + (
        '<p class="note">FP:TP = pixels wrongly labelled as the class / pixels rightly labelled as it '
        "(the paper's confusion ratio); lower is better.</p>"
    )


def cooccurrence_section(products: dict[str, dict[str, Any]], away_px: float) -> str:
    rows = []
    for label, p in products.items():
        for cls, r in p["scores"].get("cooccurrence", {}).items():
            far = fmt_pct(r.get("fa_far")) if r["kind"] == "context" else "n/a"
            rows.append((label, cls, f"{r['kind']}: {r['other']}", r["images"], fmt_pct(r["fa"]), far))
    if not rows:
        return '<p class="note">The data set records no contexts or partners (no synth.json).</p>'
    return table(
        ["product", "class", "coupled with", "images", "false activation (%)",
         f"far from objects, >{away_px:g} px (%)"],
        rows,
    ) + (
        '<p class="note">False activation: over the images holding the class, the fraction of its context\'s '
        "pixels (water for boat, rails for train) labelled as the class; for partners, the fraction of the "
        "partner's pixels labelled as the class. The last column counts only context pixels farther than one "
        "patch from any object, so CAM blur along an outline does not count as co-occurrence.</p>"
    )


def chain_section(chain: list[dict[str, Any]], coupled: list[str], plot: bytes | None) -> str:
    """The training chain (:mod:`seco_deploy.train.chain`): the last log step's figures, and their curves."""
    if not chain:
        return ('<p class="note">No chain figures: the training split has no masks, or the run logged none '
                "(RUN/metrics.jsonl has no <code>chain</code> records).</p>")
    last = chain[-1]
    rows = []
    for cls in [*coupled, "all foreground"]:
        tag = last.get("tags", {}).get(cls, {})
        seed = last.get("seeds", {}).get(cls, {})
        roi = last.get("roi", {}).get(cls, {})
        rows.append((cls, fmt_pct(seed.get("precision")), fmt_pct(seed.get("recall")), fmt_pct(seed.get("context_fa")),
                     fmt_pct(roi.get("precision")), tag.get("crops", "-"), fmt_pct(tag.get("right")),
                     fmt_pct(tag.get("context")), fmt_pct(tag.get("other")), fmt_pct(tag.get("nothing"))))
    rect = last.get("rectification", {})
    body = table(["class", "seed precision", "seed recall", "seed context FA", "ROI precision", "crops tagged",
                  "tag right", "context only", "another class", "nothing"], rows)
    body += (f'<p class="note">At iteration {last["iteration"]} (one logging window). Rectification removed '
             f'{rect.get("removed_wrong", "-")} wrong and {rect.get("removed_right", "-")} right crop tags in it. '
             "Measured on the training views against their masks, which no loss sees: the seeds are the training "
             "CAMs' pseudo-labels; a crop holds a class when at least 5% of it is that class. Read left to "
             "right, this is where SeCo's signal holds or breaks: CAM seeds, ROI, crop tags, contrast.</p>")
    if plot is not None:
        body += f'<img src="{data_uri(plot)}" alt="chain curves" style="max-width:100%">'
    return body


def curves_section(curves: bytes | None, n_train: int, n_val: int) -> str:
    if curves is None:
        return (
            '<p class="note bad">Training curves need matplotlib, the optional extra <code>report</code>: '
            "<code>pip install 'seco-deploy[report]'</code> (or <code>.venv/bin/pip install matplotlib</code>) "
            f"and run the demo again. The run logged {n_train} training and {n_val} validation records "
            "in RUN/metrics.jsonl.</p>"
        )
    return f'<img src="{data_uri(curves)}" alt="training curves" style="max-width:100%">' + (
        '<p class="note">Left: every loss term (means over each logging window); middle: learning rate; '
        "right: validation mIoU of the CAM pseudo-labels, the aux CAM and the decoder.</p>"
    )


def _legend(classes: list[str]) -> str:
    from seco_deploy.data.palette import VOC_PALETTE
    from seco_deploy.demo.images import CONTEXT_TINT

    items = [(name, tuple(int(v) for v in VOC_PALETTE[i])) for i, name in enumerate(classes)]
    items += [("water (background)", CONTEXT_TINT[1]), ("rails (background)", CONTEXT_TINT[2])]
    spans = "".join(f'<span><i style="background:rgb{c}"></i>{esc(n)}</span>' for n, c in items)
    return f'<p class="legend">{spans}</p>'


@dataclass
class GridColumn:
    """One column of an image grid: a title and a function name -> tile (RGB) or None."""

    title: str
    tile: Any


def grid_section(names: list[str], columns: list[GridColumn], classes: list[str], side: int = 180,
                 note: str = "") -> str:
    head = "".join(f"<th>{esc(c.title)}</th>" for c in columns)
    rows = []
    for name in names:
        cells = "".join(f"<td>{img(fit(c.tile(name), side), f'{c.title} {name}')}</td>" for c in columns)
        rows.append(f"<tr>{cells}</tr><tr><td colspan='{len(columns)}' class='note'>{esc(name)}</td></tr>")
    body = f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return _legend(classes) + body + (f'<p class="note">{note}</p>' if note else "")


def mask_tile(folder: Path, context_dir: Path | None = None):
    """A tile function: colourised ``folder/NAME.png`` (context tinted when ``context_dir``)."""
    from seco_deploy.data.io import read_mask

    def tile(name: str) -> np.ndarray | None:
        path = folder / f"{name}.png"
        if not path.is_file():
            return None
        mask = read_mask(path)
        ctx = None
        if context_dir is not None and (context_dir / f"{name}.png").is_file():
            ctx = read_mask(context_dir / f"{name}.png")
        return colourise(mask, ctx)

    return tile


def file_tile(folder: Path, suffix: str):
    def tile(name: str) -> np.ndarray | None:
        return read_rgb(folder / f"{name}{suffix}")

    return tile


def comparison_section(bench: dict[str, Any], data_root: Path, names: list[str], side: int = 160) -> str:
    """Baseline vs full SeCo: the table of :mod:`benchmarks.cooccurrence` and side-by-side tiles.

    ``bench`` is the benchmark JSON; its ``variants`` carry ``pred_dir`` (the pseudo-label
    prediction folder, with ``masks/`` and ``cams/``).
    """
    variants = bench.get("variants", {})
    rows = []
    for key, v in variants.items():
        co = v.get("cooccurrence", {})
        cfa = "; ".join(f"{c} {fmt_pct(r.get('fa'))} / {fmt_pct(r.get('fa_far'))}" for c, r in co.items()
                        if r.get("kind") == "context")
        rows.append((key, v.get("label", key), v.get("iterations", "-"), fmt_pct(v.get("pseudo_miou_train")),
                     fmt_pct(v.get("decoder_miou_val")), cfa))
    out = table(["variant", "switches", "iterations", "pseudo-label mIoU train (%)", "decoder mIoU val (%)",
                 "context false activation % (all / far)"], rows)
    base, full = variants.get("a"), variants.get("d")
    if base and full and names:
        cols = [
            GridColumn("image", file_tile(data_root / "JPEGImages", ".jpg")),
            GridColumn("ground truth", mask_tile(data_root / "SegmentationClass", data_root / "ContextMasks")),
            GridColumn("baseline CAM", file_tile(Path(base["pred_dir"]) / "cams", ".jpg")),
            GridColumn("SeCo CAM", file_tile(Path(full["pred_dir"]) / "cams", ".jpg")),
            GridColumn("baseline pseudo-label", mask_tile(Path(base["pred_dir"]) / "masks")),
            GridColumn("SeCo pseudo-label", mask_tile(Path(full["pred_dir"]) / "masks")),
        ]
        out += grid_section(names, cols, list(bench.get("classes", [])), side=side,
                            note="Images holding a context-coupled class (boat on water, train on rails). "
                                 "A co-occurrence error shows as heat and label on the water or rails.")
    return out


def ladder_section(ladder: dict[str, Any]) -> str:
    """The arms of a ``benchmarks/ladder.py`` result: mean (min..max) over seeds, and its command."""
    arms = ladder.get("arms", {})
    classes = sorted({c for row in arms.values() for c in row.get("context_fa", {})})

    def cell(stat: dict[str, Any] | None) -> str:
        if not stat or stat.get("mean") is None:
            return "-"
        return f"{fmt_pct(stat['mean'])} ({fmt_pct(stat['min'])}..{fmt_pct(stat['max'])})"

    rows = []
    for name, row in arms.items():
        seconds = row.get("train_seconds", [])
        rows.append((name, "/".join(str(i) for i in row.get("iterations", [])),
                     f"{sum(seconds) / max(1, len(seconds)):.0f}", cell(row.get("pseudo_miou")),
                     cell(row.get("decoder_miou")), *(cell(row.get("context_fa", {}).get(c)) for c in classes)))
    out = table(["arm", "iterations", "train s (mean)", "CAM pseudo-label mIoU %", "decoder mIoU %",
                 *(f"{c}: context FA %" for c in classes)], rows)
    seeds = ", ".join(str(s) for s in ladder.get("seeds", []))
    out += (f"<p class='note'>Mean (min..max) over seeds {esc(seeds)}, all from <code>{esc(ladder.get('pretrained'))}"
            f"</code>, profile <code>{esc(ladder.get('difficulty'))}</code>. d@N: full SeCo; a@N: the plain-CAM "
            "baseline at the same iterations; a@T: the baseline at SeCo's training time (cost ratio "
            f"{ladder.get('ratio') or 0:.2f}). Context FA: the share of the context's pixels, in images of its "
            "class, that the CAM pseudo-labels give to the class. Command: "
            f"<code>{esc(ladder.get('command'))}</code> (docs/benchmarks.md).</p>")
    return out
