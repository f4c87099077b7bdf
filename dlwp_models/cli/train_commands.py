"""The subcommands that make, measure and share weight sets: ``finetune``, ``evaluate``,
``quantize`` and ``publish``. Parsing, printing and exit codes only; the work is
:mod:`dlwp_models.train`, :mod:`dlwp_models.evaluation`, :mod:`dlwp_models.quantize` and
:mod:`dlwp_models.publish`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UsageError
from ..models.classifiers import CLASSIFIERS
from ..models.onnx_backend import BACKENDS
from .arguments import non_negative_float, positive_float, positive_int

__all__ = ["add_train_commands"]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..train import FinetuneSettings, finetune

    settings = FinetuneSettings(
        model=args.model,
        weights=args.weights,
        epochs=args.epochs,
        unfreeze=args.unfreeze,
        head_epochs=args.head_epochs,
        lr=args.lr,
        body_lr_factor=args.body_lr_factor,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        batch_size=args.batch_size,
        seed=args.seed,
        val_fraction=args.val_fraction,
        on_error=args.on_error,
        tag=args.tag,
        device=args.device,
    )
    result = finetune(args.data, args.output_dir, settings, resume=args.resume, progress=not args.quiet)
    for path, why in result.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    last = next(row for row in reversed(result.rows) if "val_acc" in row)
    print(
        f"{result.name}: validation acc@1 {result.evaluation.acc1:.2f} % on {result.evaluation.images} photos "
        f"(last epoch {last['epoch']}, train acc {last['train_acc']:.2f} %)"
    )
    print(f"weight set: {result.weight_file}")
    model, tag = result.name.split(".", 1)
    topk = min(5, len(result.evaluation.classes))
    print(
        f"use it: DLWP_MANIFEST={result.manifest} python -m dlwp_models classify --model {model} --weights {tag} "
        f"--topk {topk} PHOTO"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.data import read_labelled
    from ..evaluation.measure import evaluate
    from ..evaluation.report import write_report
    from ..hub import build
    from ..models.onnx_backend import check_backend

    backends = args.backend or ["eager"]
    for backend in backends:
        check_backend(backend)
    data = read_labelled(args.data, labels_csv=args.labels_csv)
    model = build(args.model, weights=args.weights or "DEFAULT", progress=not args.quiet, map_location="cpu")
    model = model.to(args.device)
    evaluations = [
        evaluate(model, data, backend=backend, batch_size=args.batch_size, on_error=args.on_error)
        for backend in backends
    ]
    for path, why in evaluations[0].skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    name = model.weights.name if model.weights is not None else args.model
    for e in evaluations:
        print(
            f"{name} [{e.backend}]: acc@1 {e.acc1:.2f} %, acc@{e.k} {e.acck:.2f} % on {e.images} photos of "
            f"{e.source} ({e.images_per_s:.1f} photos/s)"
        )
    first = evaluations[0]
    for label, acc in first.per_class().items():
        print(f"  {label}: {'-' if acc is None else f'{acc:.2f} %'}")
    if args.output_dir is not None:
        file = getattr(model, "weight_file", None)
        written = write_report(
            args.output_dir, model, evaluations, name=name, weight_file=None if file is None else Path(file.path)
        )
        print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from ..publish import mirror_manifest, publish_weight_set

    if args.mirror_manifest:
        if args.checkpoint or args.model or args.tag or args.categories or args.dry_run:
            raise UsageError("--mirror-manifest takes only --repo, --release and --manifest")
        names = mirror_manifest(repo=args.repo, release=args.release, manifest=args.manifest, progress=not args.quiet)
        print(f"{len(names)} files now served first from release {args.release} of {args.repo}:")
        for name in names:
            print(f"  {name}")
        return 0
    if args.checkpoint is not None and args.checkpoint.is_dir():
        if args.model or args.tag or args.categories:
            raise UsageError(
                "a weight-set folder carries its model, tag and labels; leave out --model, --tag and --categories"
            )
        entry = publish_weight_set(
            args.checkpoint, repo=args.repo, release=args.release, manifest=args.manifest, dry_run=args.dry_run
        )
    else:
        entry = _publish_file(args)
    shown = {**entry, "meta": {**entry["meta"], "categories": f"<{len(entry['meta']['categories'])} labels>"}}
    print(json.dumps(shown, indent=2))
    if args.dry_run:
        print("dry run: nothing was uploaded and no manifest was changed")
    else:
        tag = entry["name"].split(".", 1)[1]
        print(f"published {entry['name']}; load it with torch.hub.load(REPO, {entry['model']!r}, weights={tag!r})")
    return 0


def _publish_file(args: argparse.Namespace) -> dict:
    from ..publish import publish_checkpoint

    missing = [
        flag
        for flag, value in (("CHECKPOINT", args.checkpoint), ("--model", args.model), ("--tag", args.tag))
        if not value
    ]
    if missing:
        raise UsageError(f"publishing a checkpoint needs {', '.join(missing)}")
    return publish_checkpoint(
        args.checkpoint,
        model=args.model,
        tag=args.tag,
        repo=args.repo,
        release=args.release,
        manifest=args.manifest,
        categories=args.categories,
        dry_run=args.dry_run,
    )


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..quantize import quantize

    if not 0 <= args.min_agreement <= 100:
        raise UsageError(f"--min-agreement is a percentage from 0 to 100, got {args.min_agreement:g}")
    report = quantize(
        args.model,
        calibrate=args.calibrate,
        weights=args.weights,
        eval_dir=args.eval,
        method=args.method,
        max_drop=args.max_drop,
        min_agreement=args.min_agreement,
        progress=not args.quiet,
    )
    for line in report["skipped"]:
        print(f"skipped {line}", file=sys.stderr)
    how = "reused" if report["reused"] else f"made in {report['quantize_seconds']:.1f} s"
    print(
        f"{args.model}: int8 graph {how}: {report['summary']} ({report['eval_source']}); calibrated by "
        f"{report['method']} on {report['calibration_photos']} photos"
    )
    print(f"  {report['artefact']}")
    print(
        f"use it: backend='onnxruntime-int8' (python -m dlwp_models classify --model {args.model} "
        "--backend onnxruntime-int8 ...)"
    )
    return 0


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``finetune``, ``evaluate`` and ``publish`` to the command line's subcommands."""
    p = sub.add_parser("finetune", help="train a book classifier on your own classes (one folder per class)")
    p.add_argument("data", type=Path, metavar="DATA", help="one folder per class, optionally inside train/ and val/")
    p.add_argument("--model", required=True, choices=CLASSIFIERS, metavar="MODEL", help="classifier, e.g. resnet50")
    p.add_argument("--weights", help="the body's weight tag (default: the model's default)")
    p.add_argument("--output-dir", type=Path, required=True, help="folder for the weight set, log and plots")
    p.add_argument("--tag", help="weight-set tag (default: the output folder's name)")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs of the (last) stage (default 10)")
    stage = p.add_mutually_exclusive_group()
    stage.add_argument("--freeze", choices=("body",), help="train the head only, on cached features (the default)")
    stage.add_argument(
        "--unfreeze",
        choices=("last-block", "all"),
        default="none",
        help="also train the body's last block, or all of it, on augmented photos",
    )
    p.add_argument(
        "--head-epochs",
        type=_non_negative_int,
        default=5,
        help="with --unfreeze: head-only epochs first (default 5; 0 goes straight to the deeper stage)",
    )
    p.add_argument("--lr", type=positive_float, default=3e-3, help="the head's peak learning rate (default 3e-3)")
    p.add_argument(
        "--body-lr-factor", type=non_negative_float, default=0.1, help="unfrozen body's lr ÷ head's (default 0.1)"
    )
    p.add_argument("--weight-decay", type=non_negative_float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--warmup-epochs", type=non_negative_float, default=1.0, help="linear warm-up (default 1)")
    p.add_argument("--label-smoothing", type=non_negative_float, default=0.1, help="default 0.1")
    p.add_argument("--batch-size", type=positive_int, default=32, help="default 32")
    p.add_argument("--seed", type=int, default=0, help="same data + seed + flags → same weights (default 0)")
    p.add_argument("--val-fraction", type=_fraction, default=0.2, help="validation share without val/ (default 0.2)")
    p.add_argument(
        "--on-error", choices=("skip", "stop"), default="skip", help="unreadable photos: skip and list, or stop"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default cpu")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_finetune)

    p = sub.add_parser("evaluate", help="accuracy of a weight set on labelled photos, with a model card")
    p.add_argument("model", choices=CLASSIFIERS, metavar="MODEL", help="classifier, e.g. resnet101")
    p.add_argument("data", type=Path, metavar="DATA", help="one folder per class, or a flat folder with --labels-csv")
    p.add_argument("--weights", help="weight tag (default: the model's default)")
    p.add_argument("--labels-csv", type=Path, help="CSV of image,label rows (image paths relative to the CSV)")
    p.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="engine to measure (repeatable; the first is the reference; default eager)",
    )
    p.add_argument("--output-dir", type=Path, help="write evaluation.json, confusion.csv/.png and the model card")
    p.add_argument("--batch-size", type=positive_int, help="images per forward pass")
    p.add_argument(
        "--on-error", choices=("skip", "stop"), default="skip", help="unreadable photos: skip and list, or stop"
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default cpu")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_evaluate)

    from ..models.int8_backend import METHODS

    p = sub.add_parser("quantize", help="make a classifier's int8 graph from your photos, kept only if accurate")
    p.add_argument("model", choices=CLASSIFIERS, metavar="MODEL", help="classifier, e.g. resnet101")
    p.add_argument("--weights", help="weight tag (default: the model's default)")
    p.add_argument("--calibrate", type=Path, required=True, help="a folder of your photos (a few hundred)")
    p.add_argument("--eval", type=Path, help="labelled photos to measure on (default: held-out calibration photos)")
    p.add_argument("--method", choices=METHODS, default="percentile", help="calibration method (default percentile)")
    p.add_argument(
        "--max-drop", type=non_negative_float, default=0.5, help="largest acc@1 drop in points, with --eval (0.5)"
    )
    p.add_argument("--min-agreement", type=float, default=99.0, help="smallest top-1 agreement in %% (default 99)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_quantize)

    p = sub.add_parser("publish", help="share fine-tuned weights as a GitHub release asset + manifest entry")
    p.add_argument(
        "checkpoint",
        nargs="?",
        type=Path,
        metavar="CHECKPOINT",
        help="a state dict (or a dict holding one under 'state_dict' or 'model'), or a weight-set folder "
        "(dlwp finetune's output)",
    )
    p.add_argument("--model", help="the classifier architecture, e.g. resnet50")
    p.add_argument("--tag", help="weight-set tag: the entry becomes <model>.<tag>")
    p.add_argument("--repo", required=True, help="OWNER/REPO whose release holds the file")
    p.add_argument("--release", required=True, help="release tag (created when missing)")
    p.add_argument("--manifest", type=Path, help="manifest to update (default: weights/manifest.json)")
    p.add_argument("--categories", type=Path, help="labels, one per line (default: the base weights')")
    p.add_argument("--dry-run", action="store_true", help="do everything but upload and write; print the entry")
    p.add_argument(
        "--mirror-manifest",
        action="store_true",
        help="re-host every file of the manifest as release assets and list them first",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_publish)
