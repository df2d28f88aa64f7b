"""The tar stream of push/pull over HTTP (promptreg.artifact.transfer): round trip, and hostile uploads."""

from __future__ import annotations

import io
import tarfile

import pytest

from promptreg.artifact.hashing import folder_sha256
from promptreg.artifact.transfer import pack, unpack
from promptreg.errors import InputError, PayloadTooLargeError


def _folder(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "promptreg.json").write_text('{"format": 1}')
    (src / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 50)
    (src / "sub" / "notes.txt").write_text("x")
    (src / ".hidden").write_text("not part of the artifact")
    return src


def test_round_trip_keeps_the_content_hash(tmp_path):
    src = _folder(tmp_path)
    out = unpack(pack(src), tmp_path / "out", max_bytes=1 << 20)
    assert folder_sha256(out) == folder_sha256(src)
    assert not (out / ".hidden").exists()


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> list[bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return [buf.getvalue()]


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"data"


def _link(name: str, kind) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd"
    return info, None


@pytest.mark.parametrize(("members", "match"), [
    ([_file("../escape")], "unsafe path"),
    ([_file("/abs")], "unsafe path"),
    ([_file("a/../../b")], "unsafe path"),
    ([_file("a\\b")], "unsafe path"),
    ([_file(".git/config")], "unsafe path"),
    ([_link("evil", tarfile.SYMTYPE)], "not a regular file"),
    ([_link("evil", tarfile.LNKTYPE)], "not a regular file"),
    ([_link("dev", tarfile.CHRTYPE)], "not a regular file"),
    ([_file("a"), _file("a")], "twice"),
    ([], "empty"),
])
def test_hostile_uploads_are_refused_and_leave_nothing(tmp_path, members, match):
    with pytest.raises(InputError, match=match):
        unpack(_tar(*members), tmp_path / "out", max_bytes=1 << 20)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "escape").exists()


def test_size_and_count_limits(tmp_path):
    src = _folder(tmp_path)
    with pytest.raises(PayloadTooLargeError):
        unpack(pack(src), tmp_path / "out", max_bytes=4096)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="more than 2 files"):
        unpack(pack(src), tmp_path / "out", max_bytes=1 << 20, max_files=2)
    with pytest.raises(InputError, match="not a tar stream|damaged"):
        unpack([b"not a tar at all" * 100], tmp_path / "out", max_bytes=1 << 20)
    assert not (tmp_path / "out").exists()
