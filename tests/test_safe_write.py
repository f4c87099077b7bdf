"""The one safe writer (:mod:`dlwp_models.safe_write`): new temporary files created exclusively
and never through a link, moved into place whole (replacing, or refusing an existing target),
nothing half-written left behind, and every failed write told in one message."""

from __future__ import annotations

import errno
import os
import types

import pytest

from dlwp_models import safe_write
from dlwp_models.errors import DlwpError, OutputExistsError


def names_in(folder) -> list[str]:
    """The files in ``folder`` besides the test's own TORCH_HOME."""
    return sorted(p.name for p in folder.iterdir() if p.name != "torch_home")


def test_files_are_created_new_private_to_write_and_never_through_a_link(tmp_path):
    old_umask = os.umask(0o022)
    try:
        with safe_write.create_exclusive(tmp_path / "new") as out:
            out.write(b"data")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileExistsError):
        safe_write.create_exclusive(tmp_path / "new")
    assert (tmp_path / "new").read_bytes() == b"data"
    (tmp_path / "target").write_bytes(b"not yours")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):
        safe_write.create_exclusive(tmp_path / "link")
    assert (tmp_path / "target").read_bytes() == b"not yours"


def test_output_temp_file_is_created_exclusively(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_write.uuid, "uuid4", lambda: types.SimpleNamespace(hex="guessed"))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".result.png.guessed.partial").symlink_to(victim)  # an attacker who guessed the name
    with pytest.raises(DlwpError, match="could not write result.png") as info:
        safe_write.write_file(tmp_path / "result.png", b"new", replace=False, doing="write result.png")
    assert "Traceback" not in str(info.value)
    assert victim.read_text() == "precious" and not (tmp_path / "result.png").exists()


def test_full_disk_while_writing_an_output_is_a_message(tmp_path):
    def disk_full(fh):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(
        DlwpError,
        match=r"could not write result.png \(.*result.png\): No space left on device; "
        r"the disk is full\. Free some space",
    ):
        safe_write.write_file(tmp_path / "result.png", disk_full, replace=False, doing="write result.png")
    assert names_in(tmp_path) == []  # nothing half-written left


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EDQUOT, "the disk is full"),
        (errno.EROFS, "choose a folder you can write to"),
        (errno.EACCES, "choose a folder you can write to"),
        (errno.EPERM, "choose a folder you can write to"),
        (errno.EIO, "check the output folder and try again"),
    ],
)
def test_each_cause_of_a_failed_write_gets_its_advice(tmp_path, code, advice):
    error = safe_write.write_failure(OSError(code, "Some failure"), tmp_path / "x.png", "write x.png")
    text = str(error)
    assert text.startswith(f"could not write x.png ({tmp_path / 'x.png'}): Some failure; {advice}") and text.endswith(
        "."
    )
    assert safe_write.is_not_writable(OSError(code, "x")) == (code in (errno.EROFS, errno.EACCES, errno.EPERM))


def test_an_existing_target_is_replaced_only_when_asked_and_a_link_is_replaced_not_followed(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="already exists; pass --overwrite"):
        safe_write.write_file(target, b"new", replace=False)
    assert target.read_bytes() == b"old"
    safe_write.write_file(target, b"new", replace=True)
    assert target.read_bytes() == b"new"
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    target.unlink()
    target.symlink_to(victim)
    safe_write.write_file(target, b"newer", replace=True, durable=True)
    assert victim.read_bytes() == b"precious" and not target.is_symlink() and target.read_bytes() == b"newer"
    assert names_in(tmp_path) == ["out.txt", "victim.txt"]


def test_a_target_that_appears_while_it_is_written_is_not_overwritten(tmp_path):
    target = tmp_path / "out.txt"

    def racing(fh):
        fh.write(b"mine")
        target.write_bytes(b"someone else's")

    with pytest.raises(OutputExistsError, match="appeared while it was being written"):
        safe_write.write_file(target, racing, replace=False)
    assert target.read_bytes() == b"someone else's"
    assert names_in(tmp_path) == ["out.txt"]


def test_a_writer_that_fails_leaves_nothing_and_the_target_untouched(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with safe_write.staged(target, replace=True) as (_, out):
            out.write(b"half")
            raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"old" and names_in(tmp_path) == ["out.txt"]


def test_a_writer_may_fill_the_file_by_its_path_and_keep_a_mode(tmp_path):
    target = tmp_path / "model.onnx"
    with safe_write.staged(target, replace=False, durable=True, mode=0o600) as (path, out):
        out.close()
        path.write_bytes(b"graph")
    assert target.read_bytes() == b"graph" and target.stat().st_mode & 0o777 == 0o600
