"""One measurement in a fresh interpreter: ``python _worker.py TASK JSON_ARGS``; prints one JSON line.

Every task first imports torch and torchvision (both the dlwp path and the baseline pay for them),
then does its work. Tasks:

* ``load``        one timed load (``side`` = ours | baseline) of ``model``, the peak resident memory
                  of that step, then one prediction (for the cold time to first prediction);
* ``check-load``  both loads in one process: same state, same outputs, ordinary parameters;
* ``throughput``  ``predict`` on a list of photos vs the book's loop (plus prototypes), same process;
* ``caption``     beam-2 captions of a batch vs one image / one beam at a time, same process;
* ``download``    one fetch of a served file (``side`` = ours | baseline);
* ``onnx``        the ONNX Runtime backend vs eager predict, the book's loop and ORT by hand (``_onnx_worker.py``).
* ``int8``        the int8 backend: quantize, speed, first use in a new process (``_int8_worker.py``).
"""

from __future__ import annotations

import time

T_START = time.time()

import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402

T_IMPORTED = time.time()

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


# --------------------------------------------------------------------------- memory


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(VmHWM|VmRSS|RssAnon|RssFile):\s+(\d+) kB", text, re.M)}


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


# --------------------------------------------------------------------------- loads


def _hub_load(model: str):
    return torch.hub.load(str(REPO_DIR), model, source="local", pretrained=True)


def _baseline_load(model: str, files: dict[str, str]):
    import _book

    if model in ("resnet101", "alexnet"):
        return _book.torchvision_load(model)
    if model == "cyclegan":
        return _book.naive_cyclegan(Path(files["state_dict"]))
    if model == "neuraltalk2":
        return _book.naive_neuraltalk2(Path(files["encoder"]), Path(files["decoder"]), Path(files["vocab"]))
    raise ValueError(model)


def _first_prediction(model_name: str, side: str, net, image: str):
    import _book

    if model_name in ("resnet101", "alexnet"):
        if side == "ours":
            return net.predict(image)
        labels = list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
        return _book.book_classify(net, image, _book.book_transform(), labels)
    if model_name == "cyclegan":
        return (net.translate(image) if side == "ours" else _book.book_translate(net, image)).size
    if model_name == "neuraltalk2":
        if side == "ours":
            return net.caption(image)
        with torch.no_grad():
            feature = _book.upstream_features(net["encoder"], _book.caption_input(image))
            words = _book.beam_search_one_beam_at_a_time(net["decoder"], feature)
        return _book.words_to_sentence(words, net["vocab"])
    raise ValueError(model_name)


def task_load(args: dict) -> dict:
    model, side, image = args["model"], args["side"], args["image"]
    files = args["files"]  # from the parent: the baseline process never imports dlwp
    full_gc: list[float] = []  # full (generation 2) collections during the step, and their cost
    started: list[float] = []

    def on_gc(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            if phase == "start":
                started.append(time.perf_counter())
            elif started:
                full_gc.append(time.perf_counter() - started.pop())

    _reset_peak()
    before = _status()
    gc.callbacks.append(on_gc)
    t0 = time.perf_counter()
    net = _hub_load(model) if side == "ours" else _baseline_load(model, files)
    t1 = time.perf_counter()
    gc.callbacks.remove(on_gc)
    after = _status()
    prediction = _first_prediction(model, side, net, image)
    t_pred = time.time()
    return {
        "load_s": t1 - t0,
        "peak_rss_delta": after["VmHWM"] - before["VmRSS"],
        "rss_delta": after["VmRSS"] - before["VmRSS"],
        "anon_delta": after["RssAnon"] - before["RssAnon"],
        "file_delta": after["RssFile"] - before["RssFile"],
        "full_gc_s": full_gc,
        "t_start": T_START,
        "t_imported": T_IMPORTED,
        "t_pred": t_pred,
        "prediction": repr(prediction)[:200],
    }


def _ordinary(module: torch.nn.Module) -> list[str]:
    problems = []
    for name, p in module.named_parameters():
        if type(p) is not torch.nn.Parameter or p.is_meta or p.device.type != "cpu" or not p.requires_grad:
            problems.append(f"{name}: {type(p).__name__} meta={p.is_meta} device={p.device} grad={p.requires_grad}")
    for name, b in module.named_buffers():
        if b.is_meta:
            problems.append(f"{name}: meta buffer")
    return problems


def _writable(module: torch.nn.Module) -> bool:
    """Parameters can be changed in place (mmap-backed tensors are copy-on-write)."""
    p = next(module.parameters())
    with torch.no_grad():
        saved = p.detach().clone()
        p.mul_(2)
        ok = torch.equal(p, saved * 2)
        p.copy_(saved)
    return ok


def task_check_load(args: dict) -> dict:
    import _book

    model = args["model"]
    files = args["files"]
    ours = _hub_load(model)
    base = _baseline_load(model, files)
    torch.manual_seed(0)
    result: dict = {}
    with torch.no_grad():
        if model in ("resnet101", "alexnet", "cyclegan"):
            base.eval()
            sd_o, sd_b = ours.state_dict(), base.state_dict()
            result["same_keys"] = list(sd_o) == list(sd_b)
            result["same_values"] = result["same_keys"] and all(torch.equal(sd_o[k], sd_b[k]) for k in sd_o)
            x = torch.rand(2, 3, 224, 224) if model != "cyclegan" else torch.rand(1, 3, 256, 320) * 2 - 1
            result["same_outputs"] = torch.equal(ours(x), base(x))
            result["ordinary_params"] = _ordinary(ours)
        else:
            enc_o, enc_b = ours.encoder.state_dict(), base["encoder"].state_dict()
            result["same_keys"] = [k for k in enc_b if not k.startswith("fc.")] == list(enc_o) and sorted(
                ours.decoder.state_dict()
            ) == sorted(base["decoder"].state_dict())
            result["same_values"] = (
                result["same_keys"]
                and all(torch.equal(enc_o[k], enc_b[k]) for k in enc_o)
                and all(torch.equal(v, base["decoder"].state_dict()[k]) for k, v in ours.decoder.state_dict().items())
            )
            x = _book.caption_input(args["image"])
            f_o, f_b = ours.encode(x), _book.upstream_features(base["encoder"], x)
            words = _book.beam_search_one_beam_at_a_time(base["decoder"], f_b)
            result["same_outputs"] = (
                torch.equal(f_o, f_b)
                and ours.caption(args["image"]) == _book.words_to_sentence(words, base["vocab"])
                and ours.vocab == base["vocab"]
            )
            result["ordinary_params"] = _ordinary(ours)
        result["writable"] = _writable(ours)
    return result


# --------------------------------------------------------------------------- throughput


def _draft_open(path: str, resize: int):
    """JPEG draft-mode decoding (prototype, not in dlwp): the largest DCT downscale (1/2, 1/4, 1/8)
    that keeps the shorter side >= the transform's resize; the transform then resizes as usual."""
    from PIL import Image

    img = Image.open(path)
    w, h = img.size
    scale = resize / min(w, h)
    img.draft("RGB", (max(1, int(w * scale + 0.999)), max(1, int(h * scale + 0.999))))
    return img.convert("RGB")


def _prepared_batch(net, paths: list[str], *, threads: int = 1, draft: bool = False) -> torch.Tensor:
    """Prototype of a faster ``predict`` (not in dlwp): the PIL part of the transform (decode,
    resize, center crop) per image, optionally in a thread pool (PIL releases the GIL), then ONE
    uint8 stack and ONE ToTensor/Normalize for the whole batch. Element-wise, the float arithmetic
    is ToTensor's and Normalize's ((x / 255 - mean) / std), so the network input is bitwise the same
    as per-image transforms (without ``draft``)."""
    import numpy as np
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    from dlwp_models.inputs.images import load_image

    tr = net.transforms

    def pil_part(path):
        img = _draft_open(path, tr.resize) if draft else load_image(path)
        img = F.resize(img, [tr.resize], interpolation=InterpolationMode(tr.interpolation), antialias=True)
        return np.asarray(F.center_crop(img, [tr.crop, tr.crop]))  # (crop, crop, 3) uint8

    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            arrays = list(pool.map(pil_part, paths))
    else:
        arrays = [pil_part(p) for p in paths]
    with torch.inference_mode():
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
        x = batch.float().div_(255)
        return x.sub_(torch.tensor(tr.mean).view(1, 3, 1, 1)).div_(torch.tensor(tr.std).view(1, 3, 1, 1))


def _prepared_predict(
    net,
    paths: list[str],
    *,
    threads: int = 1,
    draft: bool = False,
    channels_last: bool = False,
    batch_size: int = 32,
    topk: int = 5,
):
    x = _prepared_batch(net, paths, threads=threads, draft=draft)
    net.eval()
    with torch.inference_mode():
        logits = []
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            if channels_last:  # same values, NHWC strides: oneDNN's faster convolution path on CPU
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            logits.append(net(chunk).float())
        percent = torch.softmax(torch.cat(logits), dim=1) * 100
        values, indices = percent.topk(topk, dim=1)
    return [[(net.categories[i], v) for i, v in zip(ri, rv)] for rv, ri in zip(values.tolist(), indices.tolist())]


def _compare(a: list, b: list) -> dict:
    """Two lists of top-5 predictions: same labels in the same order? largest percent difference?"""
    same_labels = all([lab for lab, _ in x] == [lab for lab, _ in y] for x, y in zip(a, b))
    same_set = all({lab for lab, _ in x} == {lab for lab, _ in y} for x, y in zip(a, b))
    max_diff = max(abs(px - py) for x, y in zip(a, b) for (_, px), (_, py) in zip(x, y))
    exact = all([tuple(p) for p in x] == [tuple(p) for p in y] for x, y in zip(a, b))
    top1 = max(x[0][1] for x in a)
    return {
        "same_labels_in_order": same_labels,
        "same_top5_set": same_set,
        "max_percent_diff": max_diff,
        "bitwise_equal": exact,
        "max_top1_percent": top1,
    }


def task_throughput(args: dict) -> dict:
    import _book

    name, paths, reps = args["model"], args["paths"], args["reps"]
    prototypes = args.get("prototypes", [])
    ours = _hub_load(name)
    base = _book.torchvision_load(name).eval()
    labels = list(ours.categories)
    preprocess = _book.book_transform()

    def book_loop():
        return [_book.book_classify(base, p, preprocess, labels) for p in paths]

    def predict():
        return [list(p) for p in ours.predict(paths)]

    runs = {
        "book": book_loop,
        "predict": predict,
        "batched_threads_draft": lambda: _prepared_predict(
            ours, paths, threads=2, draft=True, channels_last=True, batch_size=ours.default_batch_size
        ),
    }
    order = ["book", "predict", *prototypes]
    book_loop_w = [_book.book_classify(base, p, preprocess, labels) for p in paths[:2]]  # warm-up
    ours.predict(paths[:2])
    del book_loop_w
    times: dict[str, list[float]] = {k: [] for k in order}
    outputs: dict[str, list] = {}
    for r in range(reps):
        for key in order if r % 2 == 0 else order[::-1]:  # alternate, the machine drifts
            t0 = time.perf_counter()
            out = runs[key]()
            times[key].append(time.perf_counter() - t0)
            outputs[key] = out
    result = {"n": len(paths), "times": times}
    # why predict's percentages may differ from the loop's in the last digits: its network input is
    # the book's bit for bit, and the book's own model, fed the book's inputs in predict's batches,
    # differs from its one-at-a-time loop by the same float32 rounding
    from PIL import Image

    from dlwp_models.inputs.images import load_image

    book_inputs = torch.stack([preprocess(Image.open(p)) for p in paths])
    tr = ours.transforms
    our_inputs = tr.collate([tr.crop_pixels(load_image(p)) for p in paths], torch.device("cpu"), torch.float32)
    result["input_bitwise_equal"] = torch.equal(book_inputs, our_inputs)
    with torch.inference_mode():
        base.eval()
        batched = []
        for start in range(0, len(paths), ours.default_batch_size):
            chunk = book_inputs[start : start + ours.default_batch_size].contiguous(memory_format=torch.channels_last)
            batched.append(base(chunk))
        percent = torch.softmax(torch.cat(batched), dim=1) * 100
        values, indices = percent.topk(5, dim=1)
    book_batched = [[(labels[i], v) for i, v in zip(ri, rv)] for rv, ri in zip(values.tolist(), indices.tolist())]
    result["book_model_batched"] = _compare(outputs["book"], book_batched)
    result["predict_vs_book_model_batched"] = _compare(book_batched, outputs["predict"])
    for key in order[1:]:
        result[f"compare_{key}"] = _compare(outputs["book"], outputs[key])
        result[f"vs_predict_{key}"] = _compare(outputs["predict"], outputs[key])
    if any("draft" in p for p in prototypes):  # how far draft decoding moves the network's input
        from dlwp_models.inputs.images import load_image

        full = torch.stack([ours.transforms(load_image(p)) for p in paths])
        drafted = torch.stack([ours.transforms(_draft_open(p, ours.transforms.resize)) for p in paths])
        std = torch.tensor(ours.transforms.std).view(1, 3, 1, 1)
        levels = ((full - drafted) * std * 255).abs()  # in 8-bit levels of the [0, 1] image
        result["draft_input_diff_levels"] = {"max": float(levels.max()), "mean": float(levels.mean())}
    return result


# --------------------------------------------------------------------------- captioning


def task_caption(args: dict) -> dict:
    import _book

    paths, reps = args["paths"], args["reps"]
    model = _hub_load("neuraltalk2")
    enc_time = [0.0]
    dec_time = [0.0]

    def loop():
        out = []
        for p in paths:
            with torch.no_grad():
                t0 = time.perf_counter()
                feature = model.encode(_book.caption_input(p))  # one image
                t1 = time.perf_counter()
                words = _book.beam_search_one_beam_at_a_time(model.decoder, feature, beam_size=2)
                enc_time[0] += t1 - t0
                dec_time[0] += time.perf_counter() - t1
            out.append(_book.words_to_sentence(words, model.vocab))
        return out

    def batched():
        return model.caption(paths, beam_size=2)

    def batched_cl():
        """Prototype (not in dlwp): the same call with the encoder's input passed channels-last."""
        model.encode = lambda x: model.encoder(x.contiguous(memory_format=torch.channels_last))
        try:
            return model.caption(paths, beam_size=2)
        finally:
            del model.encode

    runs = {"loop": loop, "batch": batched, "batch_cl": batched_cl}
    model.caption(paths[0])  # warm-up (one image each way)
    with torch.no_grad():
        _book.beam_search_one_beam_at_a_time(model.decoder, model.encode(_book.caption_input(paths[0])))
    times: dict[str, list[float]] = {k: [] for k in runs}
    outs = {}
    for r in range(reps):
        for key in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            t0 = time.perf_counter()
            outs[key] = runs[key]()
            times[key].append(time.perf_counter() - t0)
    # where the batched call spends its time: the encoder alone on the same inputs
    from dlwp_models.inputs.images import load_images

    items, _ = load_images(paths)
    t0 = time.perf_counter()
    with torch.inference_mode():
        feats = model._encode_all([model.transforms(item) for item in items])
    t_enc_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.decoder.generate(feats, beam_size=2)
    t_dec_batch = time.perf_counter() - t0
    return {
        "n": len(paths),
        "times": times,
        "identical": outs["loop"] == outs["batch"],
        "identical_cl": outs["batch_cl"] == outs["loop"],
        "captions": outs["batch"][:3],
        "loop_encoder_s": enc_time[0] / reps,
        "loop_decoder_s": dec_time[0] / reps,
        "batch_encoder_s": t_enc_batch,
        "batch_decoder_s": t_dec_batch,
        "distinct_captions": len(set(outs["batch"])),
    }


# --------------------------------------------------------------------------- downloads


def _download_once(side: str, url: str, sha256: str, size: int, name: str) -> dict:
    if side == "ours":
        from dlwp_models.weights.download import fetch_file
        from dlwp_models.weights.manifest import FileSpec
        from dlwp_models.weights.store import cached_path

        spec = FileSpec(filename=name, urls=(url,), sha256=sha256, size=size)
        dest = cached_path(spec)
        dest.parent.mkdir(parents=True, exist_ok=True)

        def download():
            fetch_file(spec, progress=False)
    else:
        dest = Path(os.environ["TORCH_HOME"]) / "baseline-download" / name
        dest.parent.mkdir(parents=True, exist_ok=True)

        def download():
            torch.hub.download_url_to_file(url, str(dest), hash_prefix=sha256, progress=False)

    error = None
    t0 = time.perf_counter()
    try:
        download()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    ok = error is None and dest.exists() and dest.stat().st_size == size
    for path in dest.parent.glob(name + "*"):
        path.unlink()
    return {"seconds": seconds, "ok": ok, "error": error}


def task_download(args: dict) -> dict:
    """``runs`` downloads per side in this process (both libraries imported), alternating; or one
    download of ``side``."""
    fixed = {k: args[k] for k in ("url", "sha256", "size", "name")}
    if "side" in args:
        return _download_once(args["side"], **fixed)
    import urllib.request  # noqa: F401

    import dlwp_models.weights.download  # noqa: F401 - both sides' modules are imported before timing

    _download_once("ours", **fixed), _download_once("baseline", **fixed)  # warm-up
    out: dict[str, list] = {"ours": [], "baseline": []}
    for r in range(args["runs"]):
        for side in ("ours", "baseline") if r % 2 == 0 else ("baseline", "ours"):
            out[side].append(_download_once(side, **fixed))
    return out


TASKS = {
    "load": task_load,
    "check-load": task_check_load,
    "throughput": task_throughput,
    "caption": task_caption,
    "download": task_download,
    "onnx": lambda args: __import__("_onnx_worker").task_onnx(args, _hub_load, _compare),
    "int8": lambda args: __import__("_int8_worker").task_int8(args, _hub_load, _compare),
}

if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    task, raw = sys.argv[1], sys.argv[2]
    out = TASKS[task](json.loads(raw))
    print(json.dumps(out, default=str))
