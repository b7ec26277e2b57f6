"""`atomic_write`: a reader sees the old file or the new one, never half; a failed write leaves nothing."""

from pathlib import Path

import pytest

from miaray.files import atomic_write


def test_the_file_is_replaced_only_when_the_block_succeeds(tmp_path: Path):
    target = tmp_path / "rows.parquet"
    target.write_text("old")
    with atomic_write(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".rows.parquet.")  # hidden, beside the target
        temp.write_text("new")
        assert target.read_text() == "old"  # not yet: readers still see the old file
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]
    with pytest.raises(ValueError, match="checksum"):
        with atomic_write(target) as temp:
            temp.write_text("half")
            raise ValueError("checksum mismatch")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]
