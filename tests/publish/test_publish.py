"""Sharing weights: publish a fine-tuned checkpoint to a (loopback) GitHub release, load it by
tag through torch.hub from a checkout, and re-host a manifest's files as release assets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision
from conftest import REPO_DIR, git_blob_sha1, sha256_of
from github_api import Asset, FakeGitHub

import dlwp_models
from dlwp_models import IncompatibleWeightsError
from dlwp_models.cli.main import main
from dlwp_models.errors import PublishError
from dlwp_models.inputs.transforms import ClassifierTransform
from dlwp_models.publish import mirror_manifest, publish_checkpoint

REPO = "team/dlwp"
LABELS = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]


@pytest.fixture(scope="session")
def github(weight_server):
    server = FakeGitHub(weight_server)
    yield server
    server.close()


@pytest.fixture
def api_env(github, monkeypatch):
    monkeypatch.setenv("GITHUB_API_URL", github.api_url)
    monkeypatch.setenv("GITHUB_TOKEN", github.token)
    github.calls.clear()
    return github


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory):
    """A fine-tune-shaped resnet50 checkpoint: 7 classes, saved by DDP under 'state_dict'."""
    torch.manual_seed(7)
    net = torchvision.models.resnet50(weights=None, num_classes=7)
    folder = tmp_path_factory.mktemp("finetuned")
    path = folder / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    labels = folder / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    return path, labels, net.eval()


@pytest.fixture
def checkout(tmp_path):
    """A copy of the repository, as a collaborator's clone: publishing edits its manifest."""
    dest = tmp_path / "clone"
    shutil.copytree(
        REPO_DIR,
        dest,
        ignore=shutil.ignore_patterns(".git", "__pycache__", "tests", "*.egg-info", "benchmarks", ".pytest_cache"),
    )
    return dest


LOAD_AND_PREDICT = textwrap.dedent("""
    import json, sys, torch
    model = torch.hub.load(sys.argv[1], "resnet50", source="local", weights=sys.argv[2], progress=False)
    torch.manual_seed(0)
    image = torch.rand(3, 240, 320)
    with torch.inference_mode():
        logits = model(model.transforms(image).unsqueeze(0))[0].tolist()
    print(json.dumps({"categories": model.categories, "prediction": model.predict(image, topk=3),
                      "logits": logits, "weights": model.weights.name}))
""")


def test_publish_then_collaborator_loads_by_tag_and_predicts_their_labels(api_env, finetuned, checkout, tmp_path):
    checkpoint, labels, net = finetuned
    code = main(
        [
            "publish",
            str(checkpoint),
            "--model",
            "resnet50",
            "--tag",
            "ants_and_bees",
            "--repo",
            REPO,
            "--release",
            "weights-v1",
            "--manifest",
            str(checkout / "weights" / "manifest.json"),
            "--categories",
            str(labels),
            "-q",
        ]
    )
    assert code == 0
    entry = next(
        e
        for e in json.loads((checkout / "weights" / "manifest.json").read_text())["weights"]
        if e["name"] == "resnet50.ants_and_bees"
    )
    spec = entry["files"]["state_dict"]
    assert spec["filename"] == f"resnet50-ants_and_bees-{spec['sha256'][:8]}.pth"
    assert spec["urls"] == [f"{api_env.base}/{REPO}/releases/download/weights-v1/{spec['filename']}"]
    assert entry["meta"]["categories"] == LABELS and entry["default"] is False

    env = {k: v for k, v in os.environ.items() if not k.startswith("DLWP_")}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(checkout), "ANTS_AND_BEES"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["categories"] == LABELS and loaded["weights"] == "resnet50.ants_and_bees"
    assert [label for label, _ in loaded["prediction"]] and all(label in LABELS for label, _ in loaded["prediction"])
    torch.manual_seed(0)  # the subprocess's image, made the same way
    image = torch.rand(3, 240, 320)
    with torch.inference_mode():
        transform = ClassifierTransform.from_weights(dlwp_models.get_weights("DEFAULT", "resnet50"))
        expected = net(transform(image).unsqueeze(0))[0]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, atol=1e-4, rtol=1e-4)
    downloads = [path for method, path in api_env.calls if "/releases/download/" in path]
    assert downloads == [f"/{REPO}/releases/download/weights-v1/{spec['filename']}"]


def test_republishing_the_same_file_is_a_no_op(api_env, finetuned, tmp_path):
    checkpoint, labels, _ = finetuned
    manifest = tmp_path / "team.json"
    kwargs = dict(model="resnet50", tag="again", repo=REPO, release="weights-v2", manifest=manifest, categories=labels)
    first = publish_checkpoint(checkpoint, **kwargs)
    uploads = sum(1 for method, path in api_env.calls if method == "POST" and path.startswith("/uploads/"))
    second = publish_checkpoint(checkpoint, **kwargs)
    assert second == {**first, "meta": {**first["meta"], "provenance": second["meta"]["provenance"]}}
    assert sum(1 for method, path in api_env.calls if method == "POST" and path.startswith("/uploads/")) == uploads == 1
    assert [e["name"] for e in json.loads(manifest.read_text())["weights"]] == ["resnet50.again"]


def test_an_asset_with_the_same_name_and_other_bytes_is_an_error(api_env, finetuned, tmp_path):
    checkpoint, labels, _ = finetuned
    kwargs = dict(model="resnet50", tag="clash", repo=REPO, release="weights-v3", categories=labels)
    entry = publish_checkpoint(checkpoint, manifest=tmp_path / "a.json", dry_run=True, **kwargs)
    release = api_env.releases.setdefault((REPO, "weights-v3"), __import__("github_api").Release(999, "weights-v3"))
    release.assets.append(Asset(998, entry["files"]["state_dict"]["filename"], b"someone else's file"))
    with pytest.raises(PublishError, match="already has an asset .* with different content"):
        publish_checkpoint(checkpoint, manifest=tmp_path / "b.json", **kwargs)
    assert not (tmp_path / "b.json").exists()


def test_a_failed_uploads_empty_leftover_is_deleted_before_retrying(api_env, finetuned, tmp_path):
    checkpoint, labels, _ = finetuned
    api_env.fail_next_upload = True
    entry = publish_checkpoint(
        checkpoint,
        model="resnet50",
        tag="retry",
        repo=REPO,
        release="weights-v4",
        manifest=tmp_path / "m.json",
        categories=labels,
    )
    assets = api_env.releases[(REPO, "weights-v4")].assets
    assert [(a.name, a.state) for a in assets] == [(entry["files"]["state_dict"]["filename"], "uploaded")]
    assert any(method == "DELETE" for method, _ in api_env.calls)


def test_dry_run_touches_nothing_and_prints_the_entry(api_env, finetuned, checkout, capsys):
    checkpoint, labels, _ = finetuned
    manifest = checkout / "weights" / "manifest.json"
    before = manifest.read_bytes()
    assert (
        main(
            [
                "publish",
                str(checkpoint),
                "--model",
                "resnet50",
                "--tag",
                "dry",
                "--repo",
                REPO,
                "--release",
                "weights-v5",
                "--manifest",
                str(manifest),
                "--categories",
                str(labels),
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert '"name": "resnet50.dry"' in out and "dry run: nothing was uploaded" in out
    assert manifest.read_bytes() == before
    assert api_env.calls == []


def test_checkpoint_that_does_not_fit_the_architecture_names_the_first_bad_key(api_env, tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(IncompatibleWeightsError, match="layer1.0.conv3.weight|unexpected key|has shape"):
        publish_checkpoint(
            tmp_path / "r18.pth",
            model="resnet50",
            tag="x",
            repo=REPO,
            release="r",
            manifest=tmp_path / "m.json",
            dry_run=True,
        )


def test_more_classes_than_imagenet_without_labels_is_refused(finetuned, tmp_path):
    checkpoint, _, _ = finetuned
    with pytest.raises(PublishError, match="give --categories"):
        publish_checkpoint(
            checkpoint, model="resnet50", tag="x", repo=REPO, release="r", manifest=tmp_path / "m.json", dry_run=True
        )


def test_missing_token_says_how_to_set_it(finetuned, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    checkpoint, labels, _ = finetuned
    with pytest.raises(PublishError, match="GITHUB_TOKEN is not set"):
        publish_checkpoint(
            checkpoint,
            model="resnet50",
            tag="x",
            repo=REPO,
            release="r",
            manifest=tmp_path / "m.json",
            categories=labels,
        )


def test_wrong_token_is_a_clear_error(api_env, finetuned, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    checkpoint, labels, _ = finetuned
    with pytest.raises(PublishError, match="HTTP 401.*token is missing or invalid"):
        publish_checkpoint(
            checkpoint,
            model="resnet50",
            tag="x",
            repo=REPO,
            release="r",
            manifest=tmp_path / "m.json",
            categories=labels,
        )


def test_mirror_manifest_rehosts_files_and_loads_then_come_from_the_release(
    api_env, weight_server, tmp_path, monkeypatch, hub_home
):
    whole, part_a, part_b = os.urandom(300_000), os.urandom(1000), os.urandom(2000)
    manifest = tmp_path / "upstream.json"
    manifest.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "weights": [
                    {
                        "name": "testnet.v1",
                        "model": "testnet",
                        "default": True,
                        "format": "torchvision",
                        "files": {
                            "state_dict": {
                                "filename": "mirror-whole.pth",
                                "urls": [weight_server.serve("mirror-whole.pth", whole)],
                                "git_blob_sha1": git_blob_sha1(whole),
                            },
                            "encoder": {
                                "filename": "mirror-joined.pth",
                                "parts": [
                                    {
                                        "filename": "mirror-a.pth",
                                        "urls": [weight_server.serve("mirror-a.pth", part_a)],
                                        "sha256": sha256_of(part_a),
                                    },
                                    {
                                        "filename": "mirror-b.pth",
                                        "urls": [weight_server.serve("mirror-b.pth", part_b)],
                                        "sha256": sha256_of(part_b),
                                    },
                                ],
                            },
                        },
                    }
                ],
            }
        )
    )
    assert (
        main(["publish", "--mirror-manifest", "--repo", REPO, "--release", "mirror", "--manifest", str(manifest), "-q"])
        == 0
    )
    again = mirror_manifest(repo=REPO, release="mirror", manifest=manifest, progress=False)  # idempotent
    assert len(again) == 2
    uploads = [p for m, p in api_env.calls if m == "POST" and p.startswith("/uploads/")]
    assert len(uploads) == 2

    files = json.loads(manifest.read_text())["weights"][0]["files"]
    release = f"{api_env.base}/{REPO}/releases/download/mirror"
    assert files["state_dict"]["urls"] == [f"{release}/mirror-whole.pth", weight_server.url("mirror-whole.pth")]
    assert files["encoder"]["urls"] == [f"{release}/mirror-joined.pth"]
    assert files["encoder"]["sha256"] == sha256_of(part_a + part_b)

    shutil.rmtree(hub_home / "hub" / "checkpoints")  # a fresh machine
    monkeypatch.setenv("DLWP_MANIFEST", str(manifest))
    upstream_before = len(weight_server.hits_for("mirror-whole.pth")) + len(weight_server.hits_for("mirror-a.pth"))
    paths = dlwp_models.fetch(dlwp_models.get_weights("testnet.v1"), progress=False)
    assert paths["state_dict"].read_bytes() == whole and paths["encoder"].read_bytes() == part_a + part_b
    assert (
        len(weight_server.hits_for("mirror-whole.pth")) + len(weight_server.hits_for("mirror-a.pth")) == upstream_before
    )


# ----------------------------------------------------------------------------- one-off sharing


def hub_resnet50(**kwargs):
    return torch.hub.load(str(REPO_DIR), "resnet50", source="local", **kwargs)


def test_local_checkpoint_path_loads_with_its_own_head(finetuned):
    checkpoint, _, net = finetuned
    model = hub_resnet50(weights=str(checkpoint))
    assert model.weights is None and model.categories is None and model.fc.out_features == 7
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), net(x))
    model.categories = LABELS
    assert len(model.predict(torch.rand(3, 64, 64), topk=7)) == 7


def test_https_url_with_sha256_loads_and_is_cached(finetuned, https_server, trust_https):
    checkpoint, _, net = finetuned
    data = checkpoint.read_bytes()
    url = https_server.serve("shared-once.pth", data)
    model = hub_resnet50(weights=url, sha256=sha256_of(data), progress=False)
    hub_resnet50(weights=url, sha256=sha256_of(data), progress=False)
    assert len(https_server.hits_for("shared-once.pth")) == 1
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), net(x))


def test_url_without_sha256_is_refused_saying_why():
    with pytest.raises(ValueError, match="without sha256=.*could change your model"):
        hub_resnet50(weights="https://127.0.0.1:9/some.pth")


def test_url_with_the_wrong_sha256_is_refused(finetuned, https_server, trust_https):
    checkpoint, _, _ = finetuned
    url = https_server.serve("shared-wrong.pth", checkpoint.read_bytes())
    with pytest.raises(dlwp_models.DownloadError, match="sha256 mismatch"):
        hub_resnet50(weights=url, sha256="0" * 64, progress=False)


def test_num_classes_other_than_the_files_puts_a_fresh_head_on_its_body(finetuned):
    checkpoint, _, net = finetuned
    model = hub_resnet50(weights=str(checkpoint), num_classes=10)
    assert model.fc.out_features == 10 and model.categories is None
    assert torch.equal(model.layer4[0].conv1.weight, net.layer4[0].conv1.weight)
    named = hub_resnet50(weights=str(checkpoint), labels=LABELS)  # the file's own width: its head, named
    assert torch.equal(named.fc.weight, net.fc.weight) and named.categories == LABELS


# ----------------------------------------------------------------------------- the token (issue 14)


def publish_to(tmp_path, finetuned, **kwargs):
    checkpoint, labels, _ = finetuned
    return publish_checkpoint(
        checkpoint,
        model="resnet50",
        tag="tok",
        repo=REPO,
        release="r-token",
        manifest=tmp_path / "m.json",
        categories=labels,
        **kwargs,
    )


def test_token_echoed_by_an_error_reply_is_never_shown(api_env, finetuned, tmp_path, capsys):
    api_env.echo_headers_next = True
    with pytest.raises(PublishError) as info:
        publish_to(tmp_path, finetuned)
    assert "HTTP 500" in str(info.value) and "internal error" in str(info.value)
    assert api_env.token not in str(info.value) and "Bearer ***" in str(info.value)
    from dlwp_models.cli.main import main

    api_env.echo_headers_next = True
    checkpoint, labels, _ = finetuned
    assert (
        main(
            [
                "publish",
                str(checkpoint),
                "--model",
                "resnet50",
                "--tag",
                "tok",
                "--repo",
                REPO,
                "--release",
                "r-token",
                "--manifest",
                str(tmp_path / "m.json"),
                "--categories",
                str(labels),
                "-q",
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert api_env.token not in captured.err + captured.out and "HTTP 500" in captured.err


def test_token_never_goes_to_a_host_named_by_upload_url(api_env, finetuned, tmp_path):
    from github_api import FakeGitHub

    thief = FakeGitHub(api_env.files, token=api_env.token)
    try:
        # same address, other host name: a different origin as far as the token is concerned
        api_env.upload_base = thief.base.replace("127.0.0.1", "localhost")
        with pytest.raises(PublishError, match="refusing to send the GitHub token to http://localhost"):
            publish_to(tmp_path, finetuned)
        assert thief.calls == []
    finally:
        api_env.upload_base = None
        thief.close()


@pytest.mark.parametrize(
    "api_url,why",
    [
        ("http://api.example.invalid/api/v3", "must be an https:// URL"),
        ("https://user:s3cret@api.example.invalid/api/v3", "must not contain credentials"),
        ("ftp://api.example.invalid/", "must be an https:// URL"),
    ],
)
def test_unsafe_api_urls_are_refused_before_any_request(finetuned, tmp_path, monkeypatch, capsys, api_url, why):
    monkeypatch.setenv("GITHUB_TOKEN", "tok-secret-123")
    monkeypatch.setenv("GITHUB_API_URL", api_url)
    with pytest.raises(PublishError, match=why) as info:
        publish_to(tmp_path, finetuned)
    assert "s3cret" not in str(info.value) and "tok-secret-123" not in str(info.value)
    with pytest.raises(PublishError, match=why) as info:  # the dry run's printed URL too
        publish_to(tmp_path, finetuned, dry_run=True)
    assert "s3cret" not in str(info.value)


def test_token_masking_covers_token_like_text():
    from dlwp_models.publish.github import _mask

    assert (
        _mask("auth: Bearer abc.def, token ghp_0123456789abcdef; s3-cret", "s3-cret")
        == "auth: Bearer ***, token ***; ***"
    )
