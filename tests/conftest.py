"""Fixtures shared by several test files."""

import os
from pathlib import Path

import pytest


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder this process cannot create files in.  chmod does it for a
    normal user; root ignores permission bits, so for root use sysfs, where
    nobody may create files (skip if neither works)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        yield folder
        folder.chmod(0o755)
        return
    (folder / "probe").unlink()
    folder.chmod(0o755)
    try:
        os.mkdir("/sys/tqref-probe")
    except PermissionError:
        yield Path("/sys")
        return
    except OSError:
        pass
    else:
        os.rmdir("/sys/tqref-probe")
    pytest.skip("no read-only folder available to this user")
