"""The bundled CycleGAN and NeuralTalk2 pins, by value: an independent copy of design.md §3's table
(the classifiers' pins are checked in test_manifest_classifiers.py). Changing one hex digit of a
pin, the commit in a URL, or a path in the manifest fails here."""

from __future__ import annotations

from dlwp_models.weights.manifest import bundled_manifest_path, read_manifest

DLWPT = (
    "https://raw.githubusercontent.com/deep-learning-with-pytorch/dlwpt-code/d6c0210143daa133bbdeddaffc8993b1e17b5174"
)
CAPTIONING = (
    "https://raw.githubusercontent.com/deep-learning-with-pytorch/ImageCaptioning.pytorch/"
    "4cb53fd7340134e25fc63390dc8b9882295a0a9e"
)

# (weight set, role, part index or None) -> (filename, url, git blob sha1, size)
EXPECTED = {
    ("cyclegan.horse2zebra", "state_dict", None): (
        "horse2zebra_0.4.0.pth",
        f"{DLWPT}/data/p1ch2/horse2zebra_0.4.0.pth",
        "ce10268a67fba8227bd42a071e17eef1b358fa2b",
        None,
    ),
    ("neuraltalk2.coco_fc", "decoder", None): (
        "fc-model.pth",
        f"{CAPTIONING}/data/FC/fc-model.pth",
        "cd0073c00d1c1809e25e0ae794d5c58beec707d6",
        None,
    ),
    ("neuraltalk2.coco_fc", "vocab", None): (
        "fc-infos.pkl",
        f"{CAPTIONING}/data/FC/fc-infos.pkl",
        "623f78e01e9b0dd95a130b5766e6651328939f29",
        1268579,
    ),
    ("neuraltalk2.coco_fc", "encoder", 0): (
        "resnet101a.pth",
        f"{CAPTIONING}/data/imagenet_weights/resnet101a.pth",
        "2933b934efa86e68cecf59fbad1072e16455b3ab",
        None,
    ),
    ("neuraltalk2.coco_fc", "encoder", 1): (
        "resnet101b.pth",
        f"{CAPTIONING}/data/imagenet_weights/resnet101b.pth",
        "76aed7cfbdc096666152d6c80069e28be37b9acd",
        None,
    ),
}


def bundled_specs() -> dict:
    found = {}
    for ws in read_manifest(bundled_manifest_path()):
        if ws.model not in ("cyclegan", "neuraltalk2"):
            continue
        for role, spec in ws.files.items():
            if spec.parts:
                for index, part in enumerate(spec.parts):
                    found[(ws.name, role, index)] = part
            else:
                found[(ws.name, role, None)] = spec
    return found


def test_every_pin_and_url_is_the_published_one():
    found = bundled_specs()
    assert set(found) == set(EXPECTED)
    for key, (filename, url, blob, size) in EXPECTED.items():
        spec = found[key]
        assert (spec.filename, spec.urls, spec.git_blob_sha1, spec.size) == (filename, (url,), blob, size), key
        assert spec.sha256 is None and spec.sha256_prefix is None, key


def test_the_joined_encoder_is_pinned_only_through_its_two_parts():
    encoder = next(ws for ws in read_manifest(bundled_manifest_path()) if ws.name == "neuraltalk2.coco_fc").files[
        "encoder"
    ]
    assert encoder.filename == "resnet101-caffe-joined.pth" and encoder.urls == () and not encoder.has_own_hash
    assert [p.filename for p in encoder.parts] == ["resnet101a.pth", "resnet101b.pth"]  # joined in this order
