"""spineflow.core.io: what every stage writes."""

import os
import stat

import pytest

from spineflow.core.io import atomic_write_text


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_written_file_has_the_mode_a_new_file_gets(tmp_path, umask, mode):
    """Not mkstemp's private 0600: a core facility's group reads the tables."""
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "sub" / "discs.tsv", "level\tstatus\n")
    finally:
        os.umask(old)
    written = tmp_path / "sub" / "discs.tsv"
    assert stat.S_IMODE(written.stat().st_mode) == mode
    assert written.read_text() == "level\tstatus\n"
    assert [p.name for p in written.parent.iterdir()] == ["discs.tsv"]  # no temporary left
