"""Target 4: beam-2 captions/s of ``model.caption(list of 8 images)`` versus a loop that captions
one image at a time and runs each beam's decoder step on its own (same model, same process,
alternating, medians); the captions must be identical. Also splits each side into encoder and
decoder time.

    python benchmarks/bench_caption.py [--quick]
"""

from __future__ import annotations

from _setup import Row, log, median, run_worker, yes_no

TARGET = 2.0


def caption_ready() -> str | None:
    """None when dlwp_models.models.captioning can caption, else why not."""
    try:
        from dlwp_models.models.captioning import NeuralTalk2
    except Exception as exc:
        return f"dlwp_models.models.captioning does not import ({type(exc).__name__}: {exc})"
    if not hasattr(NeuralTalk2, "caption"):
        return "NeuralTalk2.caption does not exist yet"
    return None


def run(ws, *, reps: int, paths: list[str], size_label: str) -> tuple[list[Row], dict]:
    log(f"[caption] {len(paths)} photos of {size_label}, {reps} rounds")
    res = run_worker("caption", {"paths": paths, "reps": reps}, ws.env(offline=True), timeout=900)
    n = res["n"]
    cps_batch = n / median(res["times"]["batch"])
    cps_loop = n / median(res["times"]["loop"])
    cps_cl = n / median(res["times"]["batch_cl"])
    ratio = cps_batch / cps_loop
    split = (
        f"loop: encoder {res['loop_encoder_s']:.2f} s + decoder {res['loop_decoder_s']:.2f} s; "
        f"batch: encoder {res['batch_encoder_s']:.2f} s + decoder {res['batch_decoder_s']:.2f} s"
    )
    rows = [
        Row(
            f"captions/s, beam 2, batch of {n} ({size_label}) vs one image / one beam at a time (median of {reps})",
            f"{cps_batch:.2f} cap/s",
            f"{cps_loop:.2f} cap/s",
            f"{ratio:.2f}×",
            f"≥ {TARGET:g}×",
            yes_no(ratio >= TARGET),
            split,
        ),
        Row(
            f"captions identical, {size_label} (batch vs loop; {res['distinct_captions']} distinct of {n})",
            str(res["identical"]),
            "loop",
            "—",
            "identical",
            yes_no(res["identical"]),
        ),
        Row(
            f"prototype: caption() with the encoder input channels-last, {size_label}",
            f"{cps_cl:.2f} cap/s",
            f"{cps_loop:.2f} cap/s",
            f"{cps_cl / cps_loop:.2f}× ({cps_cl / cps_batch:.2f}× caption())",
            "not in dlwp",
            "—",
            f"captions identical to the loop: {res['identical_cl']}",
        ),
    ]
    log(
        f"[caption] batch {cps_batch:.2f} cap/s vs loop {cps_loop:.2f} cap/s = {ratio:.2f}×; {split}; "
        f"identical: {res['identical']}"
    )
    return rows, res
