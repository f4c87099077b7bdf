"""Command line: ``python -m dlwp_models {list,info,fetch,classify,translate,caption,finetune,
evaluate,publish,export,serve}``.

Argument parsing, printing and exit codes only: the tasks' subcommands are in
:mod:`.task_commands`, ``finetune``, ``evaluate`` and ``publish`` in :mod:`.train_commands`, the work is
done by the layers below. Failures print one paragraph (what
failed, what to do) and exit non-zero, without a traceback: 2 for arguments that do not fit
together (as argparse), 1 for everything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import DlwpError, UsageError
from ..export import FORMATS as EXPORT_FORMATS
from ..export import MAX_INPUT_SIDE
from ..inputs.transforms import PRESETS
from ..models.onnx_backend import BACKENDS
from ..models.registry import family_info
from ..tasks.caption import Caption
from ..tasks.classify import Classify
from ..tasks.translate import Translate
from ..weights.download import fetch, verify_cached
from ..weights.manifest import WeightSet, get_weights, list_weights
from ..weights.store import cached_path
from .arguments import export_side, non_negative_float, port_number, positive_float, positive_int, translate_size
from .task_commands import add_task_command, batch_usage_error
from .train_commands import add_train_commands

log = logging.getLogger("dlwp_models")


def _weights_by_name_or_model(name: str) -> WeightSet:
    """A weight set by its name, or a model's default set by the model name."""
    try:
        return get_weights(name)
    except LookupError:
        if any(ws.model.lower() == name.lower() for ws in list_weights()):
            return get_weights("DEFAULT", model=name)
        raise


def _size_of(ws: WeightSet) -> str:
    total = 0
    for spec in ws.files.values():
        size = spec.size if spec.size is not None else sum(p.size or 0 for p in spec.parts) or None
        if size is None:
            mb = ws.meta.get("file_size_mb")
            return f"{mb:.1f} MB" if isinstance(mb, (int, float)) else "?"
        total += size
    return f"{total / 1e6:.1f} MB"


def cmd_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "MODEL", "DEFAULT", "ACC@1", "SIZE")]
    for ws in list_weights(args.model):
        acc = ws.meta.get("acc@1")
        rows.append((ws.name, ws.model, "yes" if ws.default else "", f"{acc:.3f}" if acc else "", _size_of(ws)))
    if len(rows) == 1:
        print(f"no weight sets{' for model ' + repr(args.model) if args.model else ''}")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    ws = _weights_by_name_or_model(args.name)
    meta = {k: (f"<{len(v)} labels>" if k == "categories" and isinstance(v, list) else v) for k, v in ws.meta.items()}
    print(f"{ws.name}  (model {ws.model}, format {ws.format}{', default' if ws.default else ''})")
    print(f"  from manifest {ws.source}")
    for role, spec in ws.files.items():
        path = cached_path(spec)
        print(f"  file {role}: {spec.filename}  [{'cached' if path.exists() else 'not cached'}: {path}]")
        if spec.beside is not None:
            print(f"    beside the manifest: {spec.beside}")
        for url in spec.urls:
            print(f"    url {url}")
        for part in spec.parts:
            print(f"    part {part.filename}: {', '.join(part.urls)}")
        for key, value in spec.integrity().items():
            if key != "parts":
                print(f"    {key} {value}")
    print(f"  transforms {json.dumps(dict(ws.transforms))}")
    for key, value in meta.items():
        print(f"  {key}: {value}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    if args.all == bool(args.names):
        raise UsageError("give weight-set names (or model names) to fetch, or --all, not both")
    chosen = list_weights() if args.all else [_weights_by_name_or_model(n) for n in args.names]
    for ws in chosen:
        if args.verify:
            for role, sound in verify_cached(ws).items():
                if sound is False:
                    print(f"{ws.name} {role}: the cached file was damaged; fetching it again", file=sys.stderr)
        for role, path in fetch(ws, progress=not args.quiet).items():
            print(f"{ws.name} {role}: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_model

    path = export_model(
        args.name,
        output=args.output,
        format=args.format,
        weights=args.weights,
        input_size=tuple(args.input_size),
        overwrite=args.overwrite,
    )
    print(f"wrote {path} ({args.format}); input: uint8 images (N, 3, H, W)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ..serve import ServeSettings, serve
    except ImportError as exc:
        raise UsageError(
            f'serve needs the [serve] extra ({exc.name} is missing); install it with pip install -e ".[serve]".'
        ) from None
    from ..models.onnx_backend import check_backend

    weights = {}
    for item in args.weights:
        model, sep, tag = item.partition("=")
        if not sep or not model or not tag:
            raise UsageError(f"--weights takes MODEL=TAG (e.g. resnet101=IMAGENET1K_V2), got {item!r}")
        weights[model.strip()] = tag.strip()
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models:
        raise UsageError(f"--models names no model (got {args.models!r}); e.g. --models resnet101,cyclegan")
    for model in (*models, *weights):
        family_info(model)  # ValueError listing the models
    check_backend(args.backend)  # onnxruntime missing: say so before loading
    if unused := sorted(set(weights) - set(models)):
        raise UsageError(f"--weights names {', '.join(unused)}, which --models does not serve")
    if args.max_uploading_mb < args.max_upload_mb:
        raise UsageError(
            f"--max-uploading-mb ({args.max_uploading_mb:g}) must be at least --max-upload-mb "
            f"({args.max_upload_mb:g}), or no upload of the largest size could ever be received"
        )
    if args.decode_memory_mb < args.max_image_mb:
        raise UsageError(
            f"--decode-memory-mb ({args.decode_memory_mb:g}) must be at least --max-image-mb "
            f"({args.max_image_mb:g}), or no image of the largest cost could ever be decoded"
        )
    settings = ServeSettings(
        models=models,
        weights=weights,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        device=args.device,
        cors_origins=tuple(args.cors_origin),
        backend=args.backend,
        max_image_mb=args.max_image_mb,
        decode_memory_mb=args.decode_memory_mb,
        max_uploading_mb=args.max_uploading_mb,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keep_alive_s=args.keep_alive,
        max_connections=args.max_connections,
        drain_s=args.drain_seconds,
        allowed_hosts=tuple(args.allowed_host),
    )

    def ready(url: str) -> None:
        print(f"dlwp serve: {', '.join(settings.models)} ready; open {url} (Ctrl-C to stop)", flush=True)

    def failed(message: str) -> None:
        print(f"dlwp: error: {message}", file=sys.stderr, flush=True)

    return serve(settings, on_ready=ready, on_failure=failed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dlwp_models",
        description="Models of chapter 2 of Deep Learning with PyTorch: weights, classification, "
        "horse-to-zebra translation and captioning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO level)")
    parser.add_argument("--version", action="version", version=f"dlwp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the known weight sets")
    p.add_argument("--model", help="only this model's weight sets")
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("info", help="show one weight set: files, sources, integrity, metadata")
    p.add_argument("name", help="weight-set name (e.g. resnet101.imagenet1k_v1) or model name")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("fetch", help="download and verify weight files into the cache (for offline use)")
    p.add_argument("names", nargs="*", metavar="NAME", help="weight-set or model names")
    p.add_argument("--all", action="store_true", help="every weight set in the manifests")
    p.add_argument(
        "--verify",
        action="store_true",
        help="hash the cached files again (a file damaged in place keeps its size and date); a damaged "
        "one is fetched again",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_fetch)

    p = add_task_command(
        sub,
        "classify",
        "top-k ImageNet labels for images",
        lambda a: Classify(topk=a.topk),
        weights="weight tag, e.g. IMAGENET1K_V2 (default: the book's weights)",
        backend=True,
    )
    p.add_argument("--model", default=Classify.default_model, help=f"classifier (default: {Classify.default_model})")
    p.add_argument("--topk", type=positive_int, default=5, help="how many labels per image (default: 5)")

    p = add_task_command(
        sub,
        "translate",
        "turn horses into zebras (CycleGAN)",
        lambda a: Translate(size=a.size, preset=a.preset, output_dir=str(a.output_dir), overwrite=a.overwrite),
        weights="weight tag or a local generator file (default: horse2zebra)",
        backend=True,
    )
    p.add_argument(
        "-o", "--output-dir", type=Path, required=True, metavar="DIR", help="folder for <stem>_zebra.png files"
    )
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="trained",
        help="input scaling: as the weights were trained (default) or as the book feeds it",
    )
    p.add_argument(
        "--size", type=translate_size, default=256, help="shorter side after resizing, or 'none' (default: 256)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing <stem>_zebra.png files (default: refuse before translating)",
    )

    p = add_task_command(
        sub,
        "caption",
        "describe images in a sentence (NeuralTalk2)",
        lambda a: Caption(beam_size=a.beam_size),
        weights="weight tag (default: coco_fc)",
        backend=False,
    )
    p.add_argument("--beam-size", type=positive_int, default=2, help="beam width (default: 2, as the book)")

    add_train_commands(sub)

    p = sub.add_parser("export", help="write a deployable TorchScript / torch.export / ONNX artefact")
    p.add_argument("name", help="model: a classifier or cyclegan")
    p.add_argument("--weights", help="weight tag (default: the model's default)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file (default: refuse)")
    p.add_argument(
        "--input-size",
        type=export_side,
        nargs=2,
        default=(480, 640),
        metavar=("H", "W"),
        help=f"image size to check at, 1 to {MAX_INPUT_SIDE} pixels a side; torch.export and onnx artefacts are "
        "specialised to it (default 480 640)",
    )
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("serve", help="serve the models over HTTP, with a web page to try them (the [serve] extra)")
    p.add_argument(
        "--models",
        default="resnet101,cyclegan,neuraltalk2",
        help="comma-separated models to load (default: resnet101,cyclegan,neuraltalk2)",
    )
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="MODEL=TAG",
        help="weight set per model, e.g. resnet101=IMAGENET1K_V2 (repeatable; default: each model's)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    p.add_argument("--max-batch", type=positive_int, default=16, help="most requests per forward pass (default 16)")
    p.add_argument(
        "--max-wait-ms",
        type=non_negative_float,
        default=10.0,
        help="longest wait for a batch to fill after its first request (default 10)",
    )
    p.add_argument(
        "--max-queue", type=positive_int, default=64, help="requests queued per model before answering 503 (default 64)"
    )
    p.add_argument("--max-upload-mb", type=positive_float, default=20.0, help="largest upload in MiB (default 20)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the models run (default cpu)")
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from this origin to call the API (repeatable; default none)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="eager",
        help="engine for the classifiers' and the generator's network: eager PyTorch (default) or "
        'ONNX Runtime (needs pip install -e ".[onnx]")',
    )
    limits = p.add_argument_group("limits", "what one client can hold of the server (docs/serving.md)")
    for flag, default, text in (
        ("--max-image-mb", 512.0, "memory one upload may take while it is decoded (depth and channels count)"),
        ("--decode-memory-mb", 2048.0, "memory all uploads being decoded at once may take"),
        ("--max-uploading-mb", 128.0, "bytes of the uploads being received at once; beyond, 503"),
        ("--header-timeout", 10.0, "seconds a connection has to send its request headers"),
        ("--body-timeout", 60.0, "seconds a request has to send its whole body"),
        ("--keep-alive", 5.0, "seconds an idle connection is kept after an answer"),
        ("--drain-seconds", 30.0, "on SIGTERM, seconds the running batches have to finish"),
    ):
        limits.add_argument(flag, type=positive_float, default=default, help=f"{text} (default {default:g})")
    limits.add_argument(
        "--max-connections",
        type=positive_int,
        default=512,
        help="connections open at once, and always below the open-file limit (default 512)",
    )
    limits.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name the server answers, against DNS rebinding (repeatable; default: the "
        "--host address and localhost's names; * allows any)",
    )
    p.set_defaults(run=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name with undecodable bytes prints as escapes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
    args = parser.parse_args(argv)
    if hasattr(args, "records") and (problem := batch_usage_error(args)):
        parser.error(problem)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="dlwp: %(levelname)s: %(message)s"
    )
    for chatty in ("onnxscript", "onnx_ir"):  # the ONNX exporter's per-pass notes are not dlwp's news
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return args.run(args)
    except UsageError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        print("dlwp: interrupted", file=sys.stderr)
        return 130
    except (DlwpError, OSError, ValueError, TypeError, LookupError) as exc:
        message = str(exc) if not isinstance(exc, KeyError) or isinstance(exc, DlwpError) else str(exc.args[0])
        print(f"dlwp: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
