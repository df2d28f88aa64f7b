"""Content-addressed artifact store: local folder and S3 (a real moto server, no mocks)."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from promptreg.artifact.hashing import folder_sha256
from promptreg.errors import InputError, IntegrityError, NotFoundError, StoreUnavailableError
from promptreg.registry.store import S3_COMPLETE_MARKER, LocalStore, S3Store, open_store
from tests.fixtures.services import free_port


def make_artifact(folder: Path, seed: str = "a") -> tuple[Path, str]:
    """A small artifact folder with nested files; returns (folder, sha256)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(f'{{"peft_type": "PROMPT_TUNING", "seed": "{seed}"}}\n')
    (folder / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40 + seed.encode())
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "sub" / "notes.txt").write_text(f"notes {seed}\n")
    (folder / "sub" / "deeper" / "x.bin").write_bytes(b"\x00\x01" * 100)
    (folder / ".DS_Store").write_bytes(b"ignored")  # hidden: not part of the artifact
    return folder, folder_sha256(folder)


def relfiles(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


class Backend:
    """A store plus out-of-band access to its bytes (for tampering) and an upload counter."""

    def __init__(self, kind: str, store, moto=None):
        self.kind = kind
        self.store = store
        self.moto = moto
        self.puts: list[str] = []
        if kind == "s3":

            def count(params, **_kw):
                self.puts.append(params["Key"])

            store._client().meta.events.register("before-parameter-build.s3.PutObject", count)

    def tamper(self, sha: str, rel: str) -> None:
        """Flip one byte of a stored file, bypassing the store."""
        if self.kind == "local":
            p = self.store.path_for(sha) / rel
            os.chmod(p, 0o644)
            data = bytearray(p.read_bytes())
            data[0] ^= 0xFF
            p.write_bytes(bytes(data))
        else:
            c = self.moto.client()
            key = self.store._dir_key(sha) + rel
            data = bytearray(c.get_object(Bucket=self.store.bucket, Key=key)["Body"].read())
            data[0] ^= 0xFF
            c.put_object(Bucket=self.store.bucket, Key=key, Body=bytes(data))

    def add_stray(self, sha: str, rel: str, data: bytes) -> None:
        if self.kind == "local":
            p = self.store.path_for(sha) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        else:
            self.moto.client().put_object(
                Bucket=self.store.bucket, Key=self.store._dir_key(sha) + rel, Body=data
            )

    def stored_state(self, sha: str) -> dict[str, tuple]:
        """rel -> identity of the stored object (local: inode+mtime; S3: ETag+LastModified)."""
        if self.kind == "local":
            root = self.store.path_for(sha)
            return {
                p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
                for p in root.rglob("*")
                if p.is_file()
            }
        c = self.moto.client()
        prefix = self.store._dir_key(sha)
        resp = c.list_objects_v2(Bucket=self.store.bucket, Prefix=prefix)
        return {o["Key"][len(prefix) :]: (o["ETag"], o["LastModified"]) for o in resp.get("Contents", [])}


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    if request.param == "local":
        return Backend("local", open_store(str(tmp_path / "store")))
    moto = request.getfixturevalue("s3_env")
    bucket = moto.new_bucket()
    return Backend("s3", open_store(f"s3://{bucket}/reg/artifacts"), moto)


# ------------------------------------------------------------------------------------------------
# open_store / URIs
# ------------------------------------------------------------------------------------------------


def test_open_store_local_forms(tmp_path):
    a = open_store(str(tmp_path / "s"))
    b = open_store((tmp_path / "s").as_uri())
    assert isinstance(a, LocalStore) and isinstance(b, LocalStore)
    assert a.root == b.root == tmp_path / "s"
    assert a.root_uri == b.root_uri == "file://" + str(tmp_path / "s")
    sha = "ab" + "0" * 62
    assert a.uri_for(sha) == f"{a.root_uri}/sha256/ab/{sha}"
    assert a.describe() == f"local folder {tmp_path / 's'}"


def test_open_store_s3_forms(moto_s3):
    s = open_store("s3://bucket/some/prefix/", s3_endpoint_url=moto_s3.endpoint)
    assert isinstance(s, S3Store)
    assert s.root_uri == "s3://bucket/some/prefix"
    sha = "cd" + "1" * 62
    assert s.uri_for(sha) == f"s3://bucket/some/prefix/sha256/cd/{sha}"
    assert s.describe() == f"s3://bucket/some/prefix (endpoint {moto_s3.endpoint})"
    assert open_store("s3://bucket").root_uri == "s3://bucket"


@pytest.mark.parametrize(
    "bad", ["", "   ", "http://example.com/x", "gs://bucket/x", "s3://", "file://host/x"]
)
def test_open_store_rejects_bad_uris(bad):
    with pytest.raises(InputError):
        open_store(bad)


def test_uri_for_rejects_non_sha(tmp_path):
    store = open_store(str(tmp_path))
    for bad in ["abc", "G" * 64, "A" * 64]:
        with pytest.raises(InputError):
            store.uri_for(bad)


def test_store_module_does_not_import_boto3_at_import():
    import subprocess

    code = "import sys, promptreg.registry.store; print('boto3' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ------------------------------------------------------------------------------------------------
# Both backends
# ------------------------------------------------------------------------------------------------


def test_put_fetch_round_trip(backend, tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    store = backend.store
    assert not store.exists(sha)
    uri = store.put_folder(src, sha)
    assert uri == store.uri_for(sha)
    assert store.exists(sha)
    dest = store.fetch(uri, tmp_path / "out" / "fetched", sha)
    assert dest == tmp_path / "out" / "fetched"
    assert relfiles(dest) == relfiles(src)
    assert "sub/deeper/x.bin" in relfiles(dest)
    assert not (dest / ".DS_Store").exists()
    assert folder_sha256(dest) == sha
    # no temporary siblings left behind
    assert [p.name for p in dest.parent.iterdir()] == ["fetched"]
    # fetched files are ordinary writable files, independent of the store
    (dest / "sub" / "notes.txt").write_text("changed")
    again = store.fetch(uri, tmp_path / "again", sha)
    assert (again / "sub" / "notes.txt").read_text() == "notes a\n"


def test_second_put_is_idempotent(backend, tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    store = backend.store
    store.put_folder(src, sha)
    before = backend.stored_state(sha)
    n_puts = len(backend.puts)
    if backend.kind == "s3":
        assert n_puts == 5  # 4 files + completion marker
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    assert store.put_folder(src, sha) == store.uri_for(sha)
    assert backend.stored_state(sha) == before
    assert len(backend.puts) == n_puts  # nothing uploaded the second time
    # the same content from another folder is still the same address, still nothing uploaded
    other, sha2 = make_artifact(tmp_path / "other")
    assert sha2 == sha
    store.put_folder(other, sha)
    assert len(backend.puts) == n_puts


def test_exists_list_delete(backend, tmp_path):
    store = backend.store
    assert store.list_shas() == []
    src1, sha1 = make_artifact(tmp_path / "a", "one")
    src2, sha2 = make_artifact(tmp_path / "b", "two")
    assert sha1 != sha2
    store.put_folder(src1, sha1)
    store.put_folder(src2, sha2)
    assert store.list_shas() == sorted([sha1, sha2])
    assert store.exists(sha1) and store.exists(sha2)
    store.delete(sha1)
    assert not store.exists(sha1)
    assert store.exists(sha2)
    assert store.list_shas() == [sha2]
    store.delete(sha1)  # deleting an absent artifact is a no-op
    with pytest.raises(NotFoundError):
        store.fetch(store.uri_for(sha1), tmp_path / "gone", sha1)
    store.put_folder(src1, sha1)  # can be stored again after deletion
    assert store.list_shas() == sorted([sha1, sha2])


@pytest.mark.parametrize("rel", ["adapter_model.safetensors", "sub/deeper/x.bin"])
def test_tampered_copy_is_detected(backend, tmp_path, rel):
    src, sha = make_artifact(tmp_path / "src")
    store = backend.store
    uri = store.put_folder(src, sha)
    backend.tamper(sha, rel)
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError) as ei:
        store.fetch(uri, dest, sha)
    msg = str(ei.value)
    assert msg.startswith(f"sha256 mismatch for {uri}: expected {sha}, got ")
    assert msg.endswith("(artifact tampered or corrupt)")
    assert "\n" not in msg
    assert not dest.exists()
    assert list(tmp_path.glob(".dest*")) == []  # temporary folder removed


def test_put_repairs_a_tampered_copy(backend, tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    store = backend.store
    uri = store.put_folder(src, sha)
    backend.tamper(sha, "sub/notes.txt")
    n_puts = len(backend.puts)
    assert store.put_folder(src, sha) == uri
    if backend.kind == "s3":
        assert backend.puts[n_puts:] == [store._dir_key(sha) + "sub/notes.txt"]  # only the bad object
    assert folder_sha256(store.fetch(uri, tmp_path / "dest", sha)) == sha


def test_stray_file_in_stored_copy(backend, tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    store = backend.store
    uri = store.put_folder(src, sha)
    backend.add_stray(sha, "sub/extra.bin", b"not part of it")
    with pytest.raises(IntegrityError):
        store.fetch(uri, tmp_path / "dest", sha)
    assert not (tmp_path / "dest").exists()
    store.put_folder(src, sha)  # repairs
    assert relfiles(store.fetch(uri, tmp_path / "dest", sha)) == relfiles(src)


def test_fetch_with_wrong_expected_sha(backend, tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    uri = backend.store.put_folder(src, sha)
    wrong = "0" * 64
    with pytest.raises(IntegrityError, match=f"expected {wrong}, got {sha}"):
        backend.store.fetch(uri, tmp_path / "dest", wrong)
    assert not (tmp_path / "dest").exists()


def test_put_with_wrong_sha_is_input_error(backend, tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    wrong = ("f" if sha[0] != "f" else "e") + sha[1:]
    with pytest.raises(InputError, match="expected"):
        backend.store.put_folder(src, wrong)
    assert not backend.store.exists(wrong)
    assert backend.store.list_shas() == []
    with pytest.raises(InputError):
        backend.store.put_folder(tmp_path / "missing", sha)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError):
        backend.store.put_folder(empty, sha)


def test_fetch_missing_artifact_is_not_found(backend, tmp_path):
    sha = "ab" * 32
    with pytest.raises(NotFoundError):
        backend.store.fetch(backend.store.uri_for(sha), tmp_path / "dest", sha)
    assert not (tmp_path / "dest").exists()


def test_fetch_into_non_empty_dest_is_input_error(backend, tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    uri = backend.store.put_folder(src, sha)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(InputError):
        backend.store.fetch(uri, dest, sha)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError):
        backend.store.fetch(uri, afile, sha)
    # an existing empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert relfiles(backend.store.fetch(uri, empty, sha)) == relfiles(src)


def test_check_ok(backend):
    backend.store.check()


# ------------------------------------------------------------------------------------------------
# Local specifics
# ------------------------------------------------------------------------------------------------


def test_local_layout_and_read_only(tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    store = open_store(str(tmp_path / "store"))
    store.put_folder(src, sha)
    final = tmp_path / "store" / "sha256" / sha[:2] / sha
    assert final.is_dir()
    files = [p for p in final.rglob("*") if p.is_file()]
    assert sorted(p.relative_to(final).as_posix() for p in files) == sorted(relfiles(src))
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o444
        assert p.stat().st_nlink == 1  # copies, not hard links to the source
    # nothing left in the temp area
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []


def test_local_fetch_copies_not_links(tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    store = open_store(str(tmp_path / "store"))
    uri = store.put_folder(src, sha)
    dest = store.fetch(uri, tmp_path / "dest", sha)
    for p in dest.rglob("*"):
        if p.is_file():
            assert p.stat().st_nlink == 1
            assert os.access(p, os.W_OK)


def test_local_corrupt_final_folder_is_replaced(tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    store = open_store(str(tmp_path / "store"))
    final = store.path_for(sha)
    # a half-written folder at the final path (e.g. written by an older buggy tool)
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    assert store.exists(sha)  # presence only
    store.put_folder(src, sha)
    assert relfiles(final) == relfiles(src)
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []


def test_local_fetch_accepts_file_uri_with_spaces(tmp_path):
    src, sha = make_artifact(tmp_path / "src")
    store = open_store(str(tmp_path / "my store"))
    uri = store.put_folder(src, sha)
    assert "%20" in uri
    assert relfiles(store.fetch(uri, tmp_path / "d", sha)) == relfiles(src)
    again = open_store(store.root_uri)
    assert again.root == store.root
    assert again.exists(sha)


def test_local_check_unusable_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = open_store(str(blocker / "store"))
    with pytest.raises(StoreUnavailableError) as ei:
        store.check()
    assert "\n" not in str(ei.value)
    src, sha = make_artifact(tmp_path / "src")
    with pytest.raises(StoreUnavailableError):
        store.put_folder(src, sha)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_local_check_read_only_root(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    os.chmod(root, 0o555)
    try:
        with pytest.raises(StoreUnavailableError, match="not usable"):
            open_store(str(root)).check()
    finally:
        os.chmod(root, 0o755)


# ------------------------------------------------------------------------------------------------
# S3 specifics
# ------------------------------------------------------------------------------------------------


def test_s3_endpoint_from_aws_endpoint_url(s3_env, monkeypatch, tmp_path):
    """Without MLFLOW_S3_ENDPOINT_URL and without an argument, boto3's AWS_ENDPOINT_URL is used."""
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    bucket = s3_env.new_bucket()
    store = open_store(f"s3://{bucket}")
    assert store.endpoint_url is None
    src, sha = make_artifact(tmp_path / "src")
    uri = store.put_folder(src, sha)
    assert uri == f"s3://{bucket}/sha256/{sha[:2]}/{sha}"
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"sha256/{sha[:2]}/{sha}/sub/deeper/x.bin" in keys
    assert f"sha256/{sha[:2]}/{sha}/{S3_COMPLETE_MARKER}" in keys


def test_s3_explicit_endpoint_argument(s3_env, monkeypatch, tmp_path):
    endpoint = s3_env.endpoint
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    bucket = s3_env.new_bucket()
    store = open_store(f"s3://{bucket}/p", s3_endpoint_url=endpoint)
    src, sha = make_artifact(tmp_path / "src")
    uri = store.put_folder(src, sha)
    assert folder_sha256(store.fetch(uri, tmp_path / "d", sha)) == sha


def test_s3_incomplete_upload_is_not_present_and_is_completed(s3_env, tmp_path):
    bucket = s3_env.new_bucket()
    store = open_store(f"s3://{bucket}/x")
    src, sha = make_artifact(tmp_path / "src")
    # simulate a crashed earlier upload: one file only, no completion marker
    c = s3_env.client()
    c.put_object(Bucket=bucket, Key=store._dir_key(sha) + "sub/notes.txt", Body=b"notes a\n")
    assert not store.exists(sha)
    assert store.list_shas() == [sha]  # visible to gc
    with pytest.raises(IntegrityError):
        store.fetch(store.uri_for(sha), tmp_path / "d", sha)
    puts: list[str] = []
    store._client().meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **kw: puts.append(params["Key"])
    )
    store.put_folder(src, sha)
    assert store._dir_key(sha) + "sub/notes.txt" not in puts  # the correct object was not rewritten
    assert len(puts) == 4  # 3 missing files + marker
    assert store.exists(sha)
    assert relfiles(store.fetch(store.uri_for(sha), tmp_path / "d", sha)) == relfiles(src)


def test_s3_missing_bucket(s3_env, tmp_path):
    store = open_store("s3://promptreg-no-such-bucket-4711/p")
    src, sha = make_artifact(tmp_path / "src")
    for call in (
        store.check,
        lambda: store.put_folder(src, sha),
        lambda: store.exists(sha),
        store.list_shas,
        lambda: store.delete(sha),
    ):
        with pytest.raises(StoreUnavailableError) as ei:
            call()
        msg = str(ei.value)
        assert "promptreg-no-such-bucket-4711" in msg and "does not exist" in msg and "\n" not in msg
    with pytest.raises(StoreUnavailableError):
        store.fetch(store.uri_for(sha), tmp_path / "d", sha)
    assert not (tmp_path / "d").exists()


def test_s3_unreachable_endpoint_fails_fast(s3_env, tmp_path):
    port = free_port()  # nothing listens there
    endpoint = f"http://127.0.0.1:{port}"
    src, sha = make_artifact(tmp_path / "src")
    calls = {
        "check": lambda s: s.check(),
        "put_folder": lambda s: s.put_folder(src, sha),
        "fetch": lambda s: s.fetch(s.uri_for(sha), tmp_path / "d", sha),
        "exists": lambda s: s.exists(sha),
        "list_shas": lambda s: s.list_shas(),
    }
    for name, call in calls.items():
        store = open_store("s3://some-bucket/p", s3_endpoint_url=endpoint)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError) as ei:
            call(store)
        elapsed = time.monotonic() - t0
        assert elapsed < 20, f"{name} took {elapsed:.1f}s"
        msg = str(ei.value)
        assert endpoint in msg and "some-bucket" in msg and "\n" not in msg, msg
    assert not (tmp_path / "d").exists()
    assert endpoint in open_store("s3://some-bucket/p", s3_endpoint_url=endpoint).describe()


def test_s3_no_credentials(s3_env, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store(f"s3://{s3_env.new_bucket()}")
    with pytest.raises(StoreUnavailableError, match="credentials"):
        store.check()


def test_s3_unsafe_object_name_is_refused(s3_env, tmp_path):
    bucket = s3_env.new_bucket()
    store = open_store(f"s3://{bucket}")
    src, sha = make_artifact(tmp_path / "src")
    uri = store.put_folder(src, sha)
    s3_env.client().put_object(Bucket=bucket, Key=store._dir_key(sha) + "sub//evil", Body=b"x")
    with pytest.raises(IntegrityError):
        store.fetch(uri, tmp_path / "work" / "d", sha)
    assert not (tmp_path / "work" / "d").exists()
