"""The shared temp-file-and-rename write: all or nothing, no leftovers."""

from pathlib import Path

import pytest

from mmsr_model.atomic import write_atomically


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.bin"
    write_atomically(target, lambda tmp: tmp.write_bytes(b"old"))

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half_then_crash)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    assert write_atomically(target, lambda tmp: tmp.write_bytes(b"new")) == target
    assert target.read_bytes() == b"new"
