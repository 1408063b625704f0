"""moomtl.io helpers."""

from __future__ import annotations

import hashlib

import pytest

from moomtl.io import file_digest


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_file_digest_matches_hashlib_across_blocks(tmp_path, algorithm):
    data = bytes(range(256)) * 9000 + b"tail"  # > 2 MiB: several 1 MiB blocks plus a partial one
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_digest(path, algorithm) == hashlib.new(algorithm, data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_digest(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
