"""``seco demo``: synthesise -> train -> export ONNX -> predict with ONNX Runtime -> evaluate -> report.

Stages (each callable on its own; :mod:`benchmarks.cooccurrence` reuses them):

1. :func:`prepare_data`: ``seco data synth`` into ``OUT/data`` (reused when its ``synth.json``
   has the same images, size, seed and difficulty);
2. :func:`demo_config`: the preset (``cpu`` by default) with ``train.max_minutes`` set to the
   budget; when the budget is shorter than the preset's schedule at ``sec_per_iter`` seconds per
   iteration, the schedule (iterations and every phase boundary) is scaled down to fit, so the
   learning rate still decays to the end and every loss term still joins;
3. :func:`train_run`: :func:`seco_deploy.train.train` into ``OUT/run``;
4. :func:`export_model`: ``OUT/model.onnx`` with the seg and CAM heads, parity-checked;
5. :func:`predict_split`: ONNX Runtime pseudo-labels (true tags, ``--save-cam``) on train and
   val, decoder masks (``--overlay``) on val;
6. :func:`evaluate_demo`: mIoU, per-class IoU and FP:TP, context false activation; the aux CAM
   pseudo-labels come from the PyTorch checkpoint (the ONNX model has no aux head);
7. :func:`write_demo_report`: ``OUT/report.html``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seco_deploy.config import Config, build_config, validate
from seco_deploy.console import Console

__all__ = [
    "DemoOptions",
    "DemoResult",
    "demo_config",
    "evaluate_demo",
    "export_model",
    "predict_split",
    "prepare_data",
    "run_demo",
    "fit_factor",
    "measure_sec_per_iter",
    "scale_schedule",
    "TrainOutcome",
    "train_run",
    "write_demo_report",
]

_PHASE_FIELDS = ("warmup_iters", "contrast_start", "seg_start", "update_prototype", "cam2mask", "eval_every",
                 "save_every")


@dataclass
class DemoOptions:
    """What ``seco demo`` does; the CLI options map one to one."""

    out: Path = Path("runs/demo")
    minutes: float = 10.0
    images: int = 800
    size: int = 224
    seed: int = 0
    difficulty: str = "partial"  # objects this budget can learn, under a partial trap (docs/benchmarks.md)
    preset: str = "cpu"
    overrides: tuple[str, ...] = ()
    sec_per_iter: float | None = None  # None: measured before training (not for the test preset)
    iters: int | None = None  # fixed iterations (schedule scaled to them) instead of fitting to --minutes
    checkpoint: Path | None = None  # reuse a trained checkpoint: skip training
    examples: int = 6
    benchmark: Path | None = None  # a benchmarks/cooccurrence.py output folder to compare
    away_px: float = 16.0
    # Scales of the CAM pseudo-labels (ONNX and aux; `seco predict --scales`): a finer token grid than the cpu
    # preset's training CAMs (scale 1 only, for the training step's cost); docs/benchmarks.md, "resolution ceiling".
    cam_scales: tuple[float, ...] = (1.0, 1.5)


@dataclass
class DemoResult:
    out: Path
    report: Path
    figures: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- stages
def prepare_data(out: Path, images: int, size: int, seed: int, difficulty: str, console: Console) -> Path:
    """A synthetic set in ``out`` (reused when it was made with the same arguments)."""
    from seco_deploy.data.synth import load_synth_info, synthesize

    try:
        info = load_synth_info(out)
        if (info["images"], info["size"], info["seed"], info["difficulty"]) == (images, size, seed, difficulty):
            console.print(f"data: reusing {out} ({images} images, {difficulty})", highlight=False)
            return out
    except (FileNotFoundError, KeyError, ValueError):
        pass
    console.print(f"data: synthesising {images} images of {size} px ({difficulty}, seed {seed}) in {out}",
                  highlight=False)
    synthesize(out, images=images, size=size, seed=seed, difficulty=difficulty, overwrite=True)
    return out


def scale_schedule(cfg: Config, factor: float) -> Config:
    """Multiply ``train.iters`` and every phase boundary by ``factor`` (each at least 1)."""
    tc = cfg.train
    tc.iters = max(1, round(tc.iters * factor))
    for name in _PHASE_FIELDS:
        setattr(tc, name, max(1, round(getattr(tc, name) * factor)))
    tc.log_every = max(1, min(tc.log_every, tc.iters // 20 or 1))
    return cfg


def measure_sec_per_iter(cfg: Config, iteration: int | None = None, repeats: int = 2) -> float:
    """Seconds of one training iteration (forward, backward, AdamW step) at ``iteration``, measured.

    Builds the network and one batch of ``train.batch_size`` training views from ``data.root``,
    runs one warm-up iteration, times ``repeats`` more and returns the fastest times 1.1 (data
    loading, logging, validation). ``iteration`` defaults to one after every phase boundary
    (every loss term on: the costliest phase).
    """
    import torch

    from seco_deploy.data.datasets import open_dataset
    from seco_deploy.data.transforms import TrainDataset
    from seco_deploy.runtime.checkpoint import build_network
    from seco_deploy.train.iteration import Iteration, resolve_amp
    from seco_deploy.train.schedule import WarmupPolySchedule, build_optimizer
    from seco_deploy.train.step import TrainingStep

    torch.set_flush_denormal(True)
    dataset = open_dataset(cfg.data.root, cfg.data.train_split, cfg.data.format)
    views = TrainDataset(dataset, cfg.data, seed=cfg.train.seed)
    net = build_network(cfg, dataset.classes, load_pretrained=False).train()
    items = [views[i % len(views)] for i in range(cfg.train.batch_size)]
    batch = {k: torch.stack([torch.as_tensor(x[k]) for x in items])
             for k in ("image", "global_view", "local_view", "img_box", "tags")}
    run = Iteration(TrainingStep(net, cfg.model, cfg.train, cfg.data),
                    build_optimizer(net.param_groups(cfg.train), cfg.train), WarmupPolySchedule.from_config(cfg.train),
                    amp_dtype=resolve_amp(cfg.train.amp, torch.device("cpu")))
    generator = torch.Generator().manual_seed(cfg.train.seed)
    if iteration is None:
        iteration = max(cfg.train.seg_start, cfg.train.contrast_start, cfg.train.cam2mask) + 1
    best = float("inf")
    for r in range(repeats + 1):
        t = time.perf_counter()
        run(batch, iteration + r + 1, generator=generator)
        if r > 0:
            best = min(best, time.perf_counter() - t)
    return 1.1 * best


def fit_factor(cfg: Config, minutes: float, early: float, late: float) -> float:
    """Schedule scale so that ``contrast_start`` iterations at ``early`` s and the rest at ``late`` s
    fill ``minutes``; at most 1 (the preset's schedule is never stretched)."""
    tc = cfg.train
    cs = min(tc.contrast_start, tc.iters)
    planned = early * cs + late * (tc.iters - cs)
    return min(1.0, minutes * 60.0 / planned) if planned > 0 else 1.0


def demo_config(
    preset: str,
    overrides: list[str] | tuple[str, ...],
    data_root: Path,
    minutes: float,
    sec_per_iter: float | None = None,
    seed: int = 0,
    calibrate: bool | None = None,
    console: Console | None = None,
    iters: int | None = None,
) -> Config:
    """Preset + overrides, ``data.root``, ``train.max_minutes = minutes``, schedule fitted to the budget.

    The rates are ``sec_per_iter`` when given, else measured (:func:`measure_sec_per_iter`, before
    the contrast phase and with every term on) when ``calibrate`` (default: every preset but
    ``test``). When ``minutes`` at those rates hold fewer iterations than the preset plans,
    :func:`scale_schedule` shrinks the schedule to fit (:func:`fit_factor`). ``iters`` instead
    fixes the iterations (the schedule scaled to them, no measurement; ``minutes`` stays a cap):
    on a machine shared with other work a time budget buys a varying number of iterations.
    """
    cfg = build_config(preset, None, list(overrides))
    cfg.data.root = str(data_root)
    cfg.train.seed = seed
    cfg.train.max_minutes = float(minutes)
    if iters is not None:
        if iters < 1:
            raise ValueError(f"iterations must be >= 1, got {iters}")
        scale_schedule(cfg, iters / cfg.train.iters)
        cfg.train.iters = iters
        return validate(cfg)
    if minutes > 0:
        if sec_per_iter is not None:
            early = late = sec_per_iter
        elif calibrate if calibrate is not None else preset != "test":
            early, late = measure_sec_per_iter(cfg, iteration=1), measure_sec_per_iter(cfg)
            if console is not None:
                console.print(f"calibration: {early:.2f} s per iteration before the contrast phase, {late:.2f} s "
                              "with every loss term on", highlight=False)
        else:
            early = late = 0.0
        factor = fit_factor(cfg, minutes, early, late)
        if factor < 1.0:
            scale_schedule(cfg, factor)
    return validate(cfg)


@dataclass
class TrainOutcome:
    """What a training subprocess left: iterations in ``last.pt`` and why it stopped."""

    run_dir: Path
    iteration: int
    stop_reason: str
    checkpoint: Path


def train_run(cfg: Config, run_dir: Path, console: Console) -> TrainOutcome:
    """Train a fresh run in ``run_dir`` with ``seco train`` in a new Python process.

    A new process because this one has already used OpenCV and torch's thread pools (synthesis,
    calibration, an earlier variant), and DataLoader workers forked from such a process can hang
    in OpenCV; the child starts clean, with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets
    it. The config travels as ``run_dir/../NAME.config.yaml``.
    Raises ``RuntimeError`` when training fails (its output is on the console).
    """
    import os
    import shutil
    import subprocess
    import sys

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    config_path = run_dir.parent / f"{run_dir.name}.config.yaml"
    config_path.write_text(cfg.to_yaml(), encoding="utf-8")
    cmd = [sys.executable, "-m", "seco_deploy.cli", "train", "--data", cfg.data.root, "--out", str(run_dir),
           "--preset", "voc", "--config", str(config_path)]
    env = dict(os.environ)
    # Passive OpenMP waiting: on a CPU shared with other work, spinning threads of two processes
    # fight for the cores (measured here: 13.7 s/iteration spinning vs 1.0 s passive under load).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    code = subprocess.call(cmd, env=env)
    checkpoint = run_dir / "last.pt"
    if code != 0 or not checkpoint.is_file():
        raise RuntimeError(f"training failed (exit {code}): {' '.join(cmd)}")
    from seco_deploy.runtime.checkpoint import checkpoint_iteration

    reason = "done"
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        if '"stop"' in line:
            try:
                reason = json.loads(line).get("reason", reason)
            except ValueError:
                pass
    return TrainOutcome(run_dir, checkpoint_iteration(checkpoint), reason, checkpoint)


def export_model(checkpoint: Path, out: Path, console: Console) -> dict[str, Any]:
    """ONNX with the seg and CAM heads, parity-checked against PyTorch; returns figures."""
    from seco_deploy.export.exporter import ExportRequest, export_checkpoint

    outcome = export_checkpoint(
        ExportRequest(checkpoint=checkpoint, out=out, format="onnx", heads=("seg", "cam"), check=True),
        progress=lambda text: console.print(text, highlight=False, markup=False),
    )
    parity = outcome.parity
    return {
        "path": str(out),
        "mib": round(out.stat().st_size / 2**20, 2),
        "parity_passed": bool(parity.passed) if parity is not None else None,
        "parity_max_abs_diff": float(parity.max_abs_diff) if parity is not None else None,
        "parity_min_agreement": float(parity.min_agreement) if parity is not None else None,
    }


def _list_file(data_root: Path, names: list[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{(data_root / 'JPEGImages' / f'{n}.jpg').resolve()}\n" for n in names), encoding="utf-8")
    return path


def predict_split(
    model: Path,
    data_root: Path,
    names: list[str],
    out_dir: Path,
    mode: str,
    save_cam: bool = False,
    overlay: bool = False,
    batch: int = 8,
    scales: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """Run the predictor (ONNX Runtime for a .onnx model) on ``names``; outputs in ``out_dir``.

    ``mode="pseudo"`` uses the set's ``tags.csv`` (true tags); ``scales`` are ``seco predict --scales``
    (None: the model's own for the mode). Returns the run summary record.
    """
    from seco_deploy.infer.options import PredictOptions
    from seco_deploy.infer.predictor import Predictor
    from seco_deploy.infer.sources import expand_source
    from seco_deploy.infer.tags import TagTable
    from seco_deploy.runtime.backends import open_backend

    backend, info = open_backend(model, device="cpu")
    try:
        tags = TagTable(data_root / "tags.csv", list(info.classes)) if mode == "pseudo" else None
        options = PredictOptions(mode=mode, tags=tags, save_cam=save_cam, overlay=overlay, batch=batch,
                                 workers=0, overwrite=True, scales=scales)
        items = expand_source(_list_file(data_root, names, out_dir.parent / f".{out_dir.name}-inputs.txt"))
        summary = Predictor(backend, info, options).run(items, out_dir)
    finally:
        backend.close()
    if summary.failed:
        raise RuntimeError(f"prediction failed for {summary.failed} images: {summary.failures[:3]}")
    return summary.as_record()


def evaluate_demo(
    data_root: Path,
    pred_root: Path,
    checkpoint: Path,
    away_px: float = 16.0,
    cam_scales: tuple[float, ...] | None = None,
) -> dict[str, dict[str, Any]]:
    """Score the products: label -> {"split", "how", "scores"} (see :func:`score_folder`); ``cam_scales`` are the
    aux CAM pseudo-labels' (None: the checkpoint's ``model.cam_scales``), as the ONNX ones were predicted."""
    from seco_deploy.demo.evaluation import aux_cam_folder, score_folder, split_names

    train_names, val_names = split_names(data_root, "train"), split_names(data_root, "val")
    aux_dir = aux_cam_folder(checkpoint, data_root, train_names, pred_root / "aux_cam", scales=cam_scales)
    return {
        "CAM pseudo-labels": {
            "split": "train", "how": "ONNX Runtime, CAM head, true tags, bkg_thre",
            "scores": score_folder(pred_root / "pseudo" / "masks", data_root, train_names, away_px),
        },
        "CAM pseudo-labels (val)": {
            "split": "val", "how": "ONNX Runtime, CAM head, true tags, bkg_thre",
            "scores": score_folder(pred_root / "pseudo" / "masks", data_root, val_names, away_px),
        },
        "aux CAM pseudo-labels": {
            "split": "train", "how": "PyTorch checkpoint, aux CAM (not exported), true tags",
            "scores": score_folder(aux_dir, data_root, train_names, away_px),
        },
        "decoder masks": {
            "split": "val", "how": "ONNX Runtime, seg head, no tags",
            "scores": score_folder(pred_root / "mask" / "masks", data_root, val_names, away_px),
        },
    }


def pick_examples(data_root: Path, names: list[str], count: int) -> list[str]:
    """Up to ``count`` names, images holding a context-coupled class first, then the others."""
    from seco_deploy.data.io import read_mask
    from seco_deploy.data.synth import load_synth_info

    try:
        info = load_synth_info(data_root)
        coupled = {info["classes"].index(c) for c in info.get("context_of", {})}
    except (FileNotFoundError, ValueError, KeyError):
        coupled = set()
    first, rest = [], []
    for name in names:
        gt = read_mask(data_root / "SegmentationClass" / f"{name}.png")
        (first if coupled & set(gt.ravel().tolist()) else rest).append(name)
        if len(first) >= count:
            break
    return (first + rest)[:count]


def write_demo_report(
    out: Path,
    data_root: Path,
    run_dir: Path,
    pred_root: Path,
    products: dict[str, dict[str, Any]],
    summary: dict[str, Any],
    examples: int,
    away_px: float,
    benchmark: Path | None = None,
    difficulty: str = "",
) -> Path:
    """``out/report.html`` from the products' scores, the run's metrics.jsonl and the prediction folders; the shipped
    ladder of the set's profile ``difficulty`` (when there is one) at the end."""
    from seco_deploy.assets import shipped_ladder
    from seco_deploy.demo import report as rp
    from seco_deploy.demo.evaluation import split_names
    from seco_deploy.demo.plots import chain_png, curves_png, read_chain, read_metrics

    classes = [row["name"] for row in next(iter(products.values()))["scores"]["classes"]]
    rep = rp.Report("seco demo: SeCo on a synthetic co-occurrence set",
                    subtitle=rp.esc(summary.get("headline", "")))
    rep.add("summary", "Run", rp.table(["setting", "value"], [(k, v) for k, v in summary["settings"].items()],
                                                css="kv"))
    rep.add("miou", "mIoU", rp.miou_section(products))
    rep.add("per-class", "Per class: IoU and FP:TP", rp.per_class_section(products))
    rep.add("cooccurrence", "Co-occurrence: context false activation", rp.cooccurrence_section(products, away_px))
    chain = read_chain(run_dir / "metrics.jsonl")
    coupled = [c for c in classes if any(c in r.get("seeds", {}) and "context_fa" in r["seeds"][c] for r in chain)]
    rep.add("chain", "The chain: CAM seeds, ROI, crop tags, rectification", rp.chain_section(
        chain, coupled, chain_png(chain, coupled)))
    train, val = read_metrics(run_dir / "metrics.jsonl")
    rep.add("curves", "Training curves", rp.curves_section(curves_png(train, val), len(train), len(val)))
    names = pick_examples(data_root, split_names(data_root, "val"), examples)
    cols = [
        rp.GridColumn("image", rp.file_tile(data_root / "JPEGImages", ".jpg")),
        rp.GridColumn("ground truth", rp.mask_tile(data_root / "SegmentationClass", data_root / "ContextMasks")),
        rp.GridColumn("CAM heatmap", rp.file_tile(pred_root / "pseudo" / "cams", ".jpg")),
        rp.GridColumn("pseudo-label (CAM)", rp.mask_tile(pred_root / "pseudo" / "masks")),
        rp.GridColumn("decoder mask", rp.mask_tile(pred_root / "mask" / "masks")),
    ]
    rep.add("examples", "Examples (validation images)", rp.grid_section(
        names, cols, classes,
        note="CAM heatmap: the normalised CAM of the image's classes (max over them) blended on the image, as "
             "written by <code>seco predict --save-cam</code>. Water and rails are background in the ground truth "
             "(tinted); heat or labels on them are co-occurrence errors."))
    if benchmark is not None and (benchmark / "cooccurrence.json").is_file():
        bench = json.loads((benchmark / "cooccurrence.json").read_text(encoding="utf-8"))
        bench_root = Path(bench.get("data_root", data_root))
        bnames = pick_examples(bench_root, split_names(bench_root, "train"), examples)
        rep.add("comparison", "Baseline vs SeCo (benchmarks/cooccurrence.py)",
                rp.comparison_section(bench, bench_root, bnames))
    ladder = shipped_ladder(difficulty)
    if ladder is not None:
        rep.add("ladder", "Baseline vs SeCo over seeds (the shipped ladder result)", rp.ladder_section(ladder))
    return rep.write(out / "report.html")


# ---------------------------------------------------------------------------- the whole demo
def run_demo(options: DemoOptions, console: Console | None = None) -> DemoResult:
    """Every stage in order; returns where the report is and the headline figures."""
    import torch

    from seco_deploy.demo.evaluation import split_names

    console = console or Console(stderr=True)
    torch.set_flush_denormal(True)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    data_root = prepare_data(out / "data", options.images, options.size, options.seed, options.difficulty, console)
    seconds["data"] = time.perf_counter() - t

    run_dir = out / "run"
    t = time.perf_counter()
    if options.checkpoint is not None:
        checkpoint = Path(options.checkpoint)
        run_dir = checkpoint.parent
        iterations, stop = "reused", f"checkpoint {checkpoint}"
        cfg = None
    else:
        cfg = demo_config(options.preset, options.overrides, data_root, options.minutes, options.sec_per_iter,
                          options.seed, console=console, iters=options.iters)
        console.print(f"train: preset {options.preset}, {cfg.train.iters} iterations planned, "
                      f"stop after {options.minutes:g} min", highlight=False)
        result = train_run(cfg, run_dir, console)
        checkpoint = run_dir / "last.pt"
        iterations, stop = f"{result.iteration} of {cfg.train.iters}", result.stop_reason
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    onnx_path = out / "model.onnx"
    exported = export_model(checkpoint, onnx_path, console)
    seconds["export"] = time.perf_counter() - t

    t = time.perf_counter()
    pred_root = out / "pred"
    train_names, val_names = split_names(data_root, "train"), split_names(data_root, "val")
    console.print(f"predict: pseudo-labels for {len(train_names) + len(val_names)} images, masks for "
                  f"{len(val_names)} (ONNX Runtime)", highlight=False)
    predict_split(onnx_path, data_root, train_names + val_names, pred_root / "pseudo", "pseudo", save_cam=True,
                  scales=options.cam_scales)
    predict_split(onnx_path, data_root, val_names, pred_root / "mask", "mask", overlay=True)
    seconds["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    products = evaluate_demo(data_root, pred_root, checkpoint, options.away_px, options.cam_scales)
    seconds["evaluate"] = time.perf_counter() - t

    figures = headline_figures(products)
    settings = {
        "data": f"{options.images} images of {options.size} px, difficulty {options.difficulty}, seed {options.seed}",
        "preset": options.preset + (f" (+ {' '.join(options.overrides)})" if options.overrides else ""),
        "training": f"{iterations} iterations; stopped: {stop}; budget {options.minutes:g} min",
        "model": f"{onnx_path.name}: {exported['mib']} MiB, parity "
                 + ("ok" if exported["parity_passed"] else "FAILED" if exported["parity_passed"] is False else "-")
                 + (f" (max |diff| {exported['parity_max_abs_diff']:.1e}, argmax agreement "
                    f"{100 * exported['parity_min_agreement']:.3f}%)" if exported["parity_passed"] is not None else ""),
        "CAM pseudo-label scales": ", ".join(f"{s:g}" for s in options.cam_scales),
        "stage seconds": ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
    }
    if cfg is not None:
        settings["backbone"] = f"{cfg.model.backbone} {cfg.model.backbone_kwargs or ''}".strip()
        settings["initial weights"] = cfg.model.pretrained or "random initialisation"
    t = time.perf_counter()
    report = write_demo_report(out, data_root, run_dir, pred_root, products,
                               {"settings": settings, "headline": figures["headline"]},
                               options.examples, options.away_px, options.benchmark, options.difficulty)
    seconds["report"] = time.perf_counter() - t
    record = {"figures": figures, "products": products, "seconds": seconds, "settings": settings}
    (out / "figures.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return DemoResult(out=out, report=report, figures=figures, seconds=seconds)


def headline_figures(products: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """mIoU of each product and the pseudo-labels' context false activation; plus one line of text."""
    from seco_deploy.demo.report import fmt_pct

    miou = {label: p["scores"]["miou"] for label, p in products.items()}
    co = products["CAM pseudo-labels"]["scores"].get("cooccurrence", {})
    cfa = {c: {"fa": r["fa"], "fa_far": r.get("fa_far")} for c, r in co.items() if r["kind"] == "context"}
    text = "mIoU: " + ", ".join(f"{k} {fmt_pct(v)}" for k, v in miou.items())
    if cfa:
        text += "; pseudo-label context false activation: " + ", ".join(
            f"{c} {fmt_pct(r['fa'])} (far {fmt_pct(r['fa_far'])})" for c, r in cfa.items())
    return {"miou": miou, "context_false_activation": cfa, "headline": text}
