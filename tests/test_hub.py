"""PyTorch Hub as users type it: torch.hub.list / help / load on "org/dlwp:main" (the checkout
linked into TORCH_HOME/hub, which torch uses without any network call for an explicit ref)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_DIR


def _hubconf_entrypoints() -> list[tuple[str, str]]:
    """(name, model) of each ``name = _entrypoint("model")`` line of hubconf.py, in order."""
    found = []
    for node in ast.parse((REPO_DIR / "hubconf.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            (target,) = node.targets
            (argument,) = node.value.args
            found.append((target.id, argument.value))
    return found


HUBCONF_NAMES = sorted(name for name, _ in _hubconf_entrypoints())


@pytest.fixture
def linked_repo(hub_home):
    (hub_home / "hub").mkdir(exist_ok=True)
    (hub_home / "hub" / "org_dlwp_main").symlink_to(REPO_DIR)
    return "org/dlwp:main"


def test_hubconf_the_registry_and_hub_list_agree(linked_repo):
    """Each model is named once in hubconf.py, by its own name, and the names are exactly the
    registered families' models and what torch.hub.list shows."""
    from dlwp_models.models import registry
    from dlwp_models.models.classifiers import CLASSIFIERS

    entrypoints = _hubconf_entrypoints()
    assert all(name == model for name, model in entrypoints)
    assert len(HUBCONF_NAMES) == len(set(HUBCONF_NAMES))
    names = torch.hub.list(linked_repo, verbose=False)
    assert sorted(names) == HUBCONF_NAMES == sorted(registry.models())
    assert sorted(registry.models()) == sorted([*CLASSIFIERS, "cyclegan", "neuraltalk2"])


def test_every_family_registers_a_known_task_and_its_format():
    from dlwp_models.models import registry
    from dlwp_models.tasks import tasks
    from dlwp_models.weights.manifest import formats

    for info in registry.families():
        assert info.task in tasks() and info.format in formats()
        assert set(info.heads) <= set(info.models)
        assert registry.load_family(info.models[0]) is not None  # its builder imports
    with pytest.raises(ValueError, match="unknown model 'resnet9000'; choose one of"):
        registry.family_info("resnet9000")


@pytest.mark.parametrize("name", ["resnet101", "alexnet", "cyclegan", "neuraltalk2"])
def test_hub_help_shows_weights_args_and_example(linked_repo, name):
    text = torch.hub.help(linked_repo, name)
    assert "pretrained" in text and "weights" in text and "Example" in text
    assert "map_location" in text and "progress" in text


def test_resnet101_help_lists_both_weight_sets_with_accuracy(linked_repo):
    text = torch.hub.help(linked_repo, "resnet101")
    assert "IMAGENET1K_V1" in text and "IMAGENET1K_V2" in text and "77.374" in text and "81.886" in text


def test_hub_load_by_repo_name_without_weights(linked_repo):
    model = torch.hub.load(linked_repo, "squeezenet1_1", verbose=False)
    assert model.weights is None and len(model.categories) == 1000


def test_hub_list_does_not_import_torchvision(hub_home, linked_repo):
    code = (
        "import sys, torch; names = torch.hub.list('org/dlwp:main', verbose=False); "
        "print(len(names), 'torchvision' in sys.modules)"
    )
    env = {**os.environ, "TORCH_HOME": str(hub_home)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(HUBCONF_NAMES)), "False"]
