"""Budgets the whole repository keeps: a GPU run carries the working tree (64 MiB at most) with its data."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 56 * 1024 * 1024


def test_tracked_files_stay_under_56_mib():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    total = sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())
    assert 0 < total < LIMIT, f"tracked files hold {total / 2**20:.1f} MiB"
