"""Safe loading: weights-only torch.load, the restricted unpickler, strict loading."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from dlwp_models import IncompatibleWeightsError, UnsafeFileError
from dlwp_models.loading.checkpoints import load_state_dict_file, restricted_load
from dlwp_models.loading.modules import build_on_meta, load_into

MARKER_ENV = "DLWP_TEST_PWNED"


class RunsCode:
    """Unpickling this would call os.system (through __reduce__)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, path)
    with pytest.raises(pickle.UnpicklingError) as torchs:  # what torch itself says, first line
        torch.load(path, weights_only=True)
    first = str(torchs.value).strip().splitlines()[0]
    with pytest.raises(UnsafeFileError) as info:
        load_state_dict_file(path)
    assert str(info.value) == (
        f"refused to load evil.pth: it holds objects that a weights-only load does not allow ({first}). Only "
        "tensors and plain containers are loaded; re-save the file as a plain state dict with "
        "torch.save(model.state_dict(), path)."
    )
    assert not marker.exists()


REFUSED = (
    "refused to load w.pth: it holds objects that a weights-only load does not allow ({}). Only "
    "tensors and plain containers are loaded; re-save the file as a plain state dict with "
    "torch.save(model.state_dict(), path)."
)
NO_DEVICE = "cannot load w.pth onto this machine's devices ({}). Pass map_location='cpu' (or another available device)."
DAMAGED = (
    "cannot read w.pth as a PyTorch checkpoint ({}). The file is damaged or not a checkpoint; delete it "
    "from the cache and fetch it again."
)


@pytest.mark.parametrize(
    "raised, expected",
    [
        (pickle.UnpicklingError("Weights only load failed.\nmore lines"), REFUSED.format("Weights only load failed.")),
        (pickle.UnpicklingError("  "), REFUSED.format("UnpicklingError")),
        # torch's words for a GPU file on a machine without one, and for a device it was not built for
        (
            RuntimeError(
                "Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is "
                "False.\nIf you are running on a CPU-only machine, ..."
            ),
            NO_DEVICE.format(
                "Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False."
            ),
        ),
        (
            RuntimeError("CUDA error: no kernel image is available for execution"),
            NO_DEVICE.format("CUDA error: no kernel image is available for execution"),
        ),
        (
            RuntimeError("PyTorch is not linked with support for xpu Devices"),
            NO_DEVICE.format("PyTorch is not linked with support for xpu Devices"),
        ),
        (
            RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory"),
            DAMAGED.format(
                "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory"
            ),
        ),
        (RuntimeError(""), DAMAGED.format("RuntimeError")),
        (EOFError("Ran out of input\nsecond line"), DAMAGED.format("EOFError: Ran out of input")),
        (ValueError(""), DAMAGED.format("ValueError")),
        (OSError(" \n "), DAMAGED.format("OSError")),
    ],
)
def test_each_failure_of_torch_load_gets_its_own_message(tmp_path, monkeypatch, raised, expected):
    # the message is built from the first line of torch's reason, or the exception's type without one
    path = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, path)

    def load(*args, **kwargs):
        raise raised

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(UnsafeFileError) as info:
        load_state_dict_file(path)
    assert str(info.value) == expected
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_legacy_format_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil-legacy.pth"
    torch.save({"payload": RunsCode(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFileError):
        load_state_dict_file(path)
    assert not marker.exists()


def test_restricted_unpickler_refuses_globals_off_the_allow_list(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"vocab": RunsCode(marker)}, protocol=0))
    with pytest.raises(UnsafeFileError, match="posix.system|os.system"):
        restricted_load(path, allowed={("argparse", "Namespace"): object})
    assert not marker.exists()


def test_restricted_unpickler_resolves_allowed_globals(tmp_path):
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps({"when": complex(1, 2)}, protocol=0, fix_imports=False))
    assert restricted_load(path, allowed={("builtins", "complex"): complex}) == {"when": complex(1, 2)}


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "damaged.pth"
    torch.save({"w": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UnsafeFileError, match="cannot read damaged.pth"):
        load_state_dict_file(path)


def test_building_on_meta_runs_no_initialiser():
    reached = []

    class Outer(torch.overrides.TorchFunctionMode):  # sees only what build_on_meta lets through
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name.endswith("_") and any(word in name for word in ("uniform", "normal", "fill", "zero", "ones")):
                reached.append(name)
            return func(*args, **(kwargs or {}))

    with Outer():
        model = build_on_meta(
            lambda: nn.Sequential(
                nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2), nn.Embedding(5, 4), nn.LSTM(4, 4)
            )
        )
    assert all(t.is_meta for t in model.state_dict().values())
    assert reached == []


def test_zip_checkpoints_are_memory_mapped_and_load_by_assignment(tmp_path):
    source = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    path = tmp_path / "net.pth"
    torch.save(source.state_dict(), path)
    model = build_on_meta(lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)))
    state = load_state_dict_file(path)
    load_into(model, state, source="net.pth")
    assert model[0].weight.data_ptr() == state["0.weight"].data_ptr()  # no copy
    assert not any(t.is_meta for t in model.state_dict().values())
    assert isinstance(model[0].weight, nn.Parameter) and model[0].weight.requires_grad
    x = torch.randn(5, 4)
    torch.testing.assert_close(model.eval()(x), source.eval()(x))


def test_zip_files_are_mapped_and_legacy_files_read_unless_told(tmp_path, monkeypatch):
    """torch.load is asked to memory-map exactly the zip-format files (legacy ones cannot be), and
    always for a weights-only load: explicitly, because torch before 2.6 (which setup.cfg allows)
    defaults to a full unpickling that can run a checkpoint's code."""
    import dlwp_models.loading.checkpoints as checkpoints

    zipped, legacy = tmp_path / "zip.pth", tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(3)}, zipped)
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    asked = []
    real = torch.load

    def spy(*args, **kwargs):
        asked.append(kwargs["mmap"])
        assert kwargs.get("weights_only") is True, kwargs
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "load", spy)
    for path, mmap in ((zipped, None), (legacy, None), (zipped, False)):
        assert torch.equal(load_state_dict_file(path, mmap=mmap)["w"], torch.ones(3))
    assert asked == [True, False, False]


def test_legacy_files_without_batchnorm_counters_load(tmp_path):
    source = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = load_into(build_on_meta(lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))), state, source="old")
    assert int(model[1].num_batches_tracked) == 0


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda sd: sd.pop("0.bias"), "missing key '0.bias'"),
        (lambda sd: sd.update(extra=torch.zeros(1)), "unexpected key 'extra'"),
        (lambda sd: sd.update({"0.weight": torch.zeros(3, 5)}), "key '0.weight' has shape (3, 5), expected (3, 4)"),
    ],
)
def test_strict_loading_names_the_first_offending_key(mutate, fragment):
    state = dict(nn.Sequential(nn.Linear(4, 3)).state_dict())
    mutate(state)
    with pytest.raises(IncompatibleWeightsError) as info:
        load_into(build_on_meta(lambda: nn.Sequential(nn.Linear(4, 3))), state, source="f.pth")
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- the restricted unpickler's words


def test_a_global_off_the_allow_list_is_refused_in_full_words(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(RunsCode(tmp_path / "pwned"), protocol=0))
    module = os.system.__module__  # posix on Linux
    with pytest.raises(UnsafeFileError) as info:
        restricted_load(path, allowed={})
    assert str(info.value) == (
        f"refused to load evil.pkl: it references the global {module}.system, which is not on the allow-list "
        "for this file, so it was not imported or run. Use the published file, or re-create it without "
        "custom objects."
    )


def test_a_pickle_with_persistent_ids_is_refused(tmp_path):
    path = tmp_path / "persistent.pkl"
    path.write_bytes(b"Pstorage-0\n.")  # protocol 0: a persistent id
    with pytest.raises(UnsafeFileError) as info:
        restricted_load(path, allowed={})
    assert str(info.value) == (
        "refused to load persistent.pkl: it uses persistent ids, which this file format "
        "never needs. Use the published file."
    )


def test_a_damaged_pickle_is_named_with_pickles_own_reason(tmp_path):
    data = b"(dp0\nS'vocab'\np1\n"  # cut off mid-way
    with pytest.raises(Exception) as reference:
        pickle.loads(data)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafeFileError) as info:
        restricted_load(path, allowed={})
    assert str(info.value) == (
        f"cannot read cut.pkl as a pickle ({type(reference.value).__name__}: {reference.value}). The file is "
        "damaged or not the expected file; delete it from the cache and fetch it again."
    )


def test_python2_byte_strings_are_read_as_ascii_unless_told(tmp_path):
    path = tmp_path / "py2.pkl"
    path.write_bytes(b"S'abc'\np0\n.")  # a Python 2 str, protocol 0
    assert restricted_load(path, allowed={}) == "abc"
    path.write_bytes(b"S'caf\\xe9'\np0\n.")
    assert restricted_load(path, allowed={}, encoding="latin1") == "caf\xe9"
    with pytest.raises(UnsafeFileError, match=r"cannot read py2.pkl as a pickle \(UnicodeDecodeError: 'ascii'"):
        restricted_load(path, allowed={})


# --------------------------------------------------------------------------- finding the state dict


def test_a_training_checkpoints_state_dict_is_found_and_dataparallel_prefixes_dropped():
    from dlwp_models.loading.checkpoints import plain_state_dict

    w, b = torch.ones(2), torch.zeros(2)
    plain = {"fc.weight": w, "fc.bias": b}
    for raw in (
        plain,
        {"state_dict": plain, "epoch": 3},
        {"model": plain, "optimizer": {"lr": 0.1}},
        {"state_dict": {"module.fc.weight": w, "module.fc.bias": b}},
    ):
        got = plain_state_dict(raw, source="ckpt.pth")
        assert list(got) == ["fc.weight", "fc.bias"] and got["fc.weight"] is w and got["fc.bias"] is b
    mixed = {"module.fc.weight": w, "fc.bias": b}  # a prefix on only some keys stays
    assert list(plain_state_dict(mixed, source="ckpt.pth")) == ["module.fc.weight", "fc.bias"]


@pytest.mark.parametrize(
    "raw", [[torch.ones(1)], {}, {"fc.weight": torch.ones(1), "epoch": 3}, {"state_dict": "not a mapping"}]
)
def test_anything_but_a_state_dict_of_tensors_is_refused_saying_how_to_save_one(raw):
    from dlwp_models.loading.checkpoints import plain_state_dict

    with pytest.raises(IncompatibleWeightsError) as info:
        plain_state_dict(raw, source="ckpt.pth")
    assert str(info.value) == (
        "ckpt.pth: expected a state dict of tensors (or a dict holding one under "
        "'state_dict' or 'model'); save it with torch.save(model.state_dict(), path)."
    )
