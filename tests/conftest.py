import os
import subprocess

import pytest

# Tests must not depend on a GPU being present or absent.
os.environ.setdefault("ENGINE_BACKEND", "numpy")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no file can be created in: chmod for a user, a read-only tmpfs for root (which ignores modes)."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("running as root and cannot mount a read-only tmpfs")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)
