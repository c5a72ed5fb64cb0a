"""Upload storage, the same tests for both implementations — the local directory and the S3-compatible object
store (against a real ``rclone serve s3`` on 127.0.0.1): the size limit fires while streaming and leaves nothing,
random names, round trip through ``local_copy``, safe and idempotent deletion confined to the store, private
local directories (unsafe ones refused); plus sniffing and the local directory's own permission rules."""

import os
import stat
import tempfile
from pathlib import Path

import pytest

from service.s3_storage import MIN_PART_BYTES, S3UploadStorage
from service.settings import Settings
from service.storage import LocalUploadStorage, UnsafeUploadDir, UploadTooLarge, default_upload_dir, sniff_video
from tests.media import carphone_path

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def make_storage(request):
    """``make(directory)`` → the storage under test: uploads in ``directory`` (local), or in the test's own prefix
    of the session's S3 server with ``directory`` for the local copies (s3). Parts are S3's minimum, 5 MiB."""

    def make(directory: Path):
        if request.param == "local":
            return LocalUploadStorage(directory)
        env = request.getfixturevalue("s3_env")
        return S3UploadStorage(env["DJLDML_UPLOAD_STORE"], directory, endpoint_url=env["DJLDML_S3_ENDPOINT_URL"],
                               part_bytes=MIN_PART_BYTES)

    make.kind = request.param
    return make


def stored(storage, directory: Path) -> list:
    """Everything the storage holds: complete and partial uploads, and any file left in the local directory."""
    return [*storage.uploads(), *storage.partial_uploads(), *(p.name for p in directory.iterdir())]


def write_in_chunks(w, data: bytes, chunk: int = 64 * 1024) -> None:
    for i in range(0, len(data), chunk):
        w.write(data[i:i + chunk])


@pytest.mark.parametrize("limit, first, second", [(100, 60, 41), (7 * MiB, 6 * MiB, 2 * MiB)],
                         ids=["small", "past-one-part"])
def test_writer_refuses_past_the_limit_and_leaves_nothing(make_storage, tmp_path, limit, first, second):
    storage = make_storage(tmp_path / "up")
    w = storage.open_writer(limit=limit)
    write_in_chunks(w, b"x" * first)  # past one part: the object store has a multipart upload going
    with pytest.raises(UploadTooLarge):
        w.write(b"x" * second)
    w.abort()  # what the receiver does next: a second abort is quiet
    assert stored(storage, tmp_path / "up") == []


def test_names_are_random_and_private(make_storage, tmp_path):
    storage = make_storage(tmp_path / "up")
    a, b = storage.open_writer(10), storage.open_writer(10)
    a.close(), b.close()
    assert a.path != b.path
    assert sorted(str(ref) for _, ref, _ in storage.uploads()) == sorted([str(a.path), str(b.path)])
    assert all(name.isalnum() and len(name) == 32 for name, _, _ in storage.uploads())
    assert (tmp_path / "up").stat().st_mode & 0o077 == 0


def test_round_trip_through_a_local_copy(make_storage, tmp_path):
    storage = make_storage(tmp_path / "up")
    data = os.urandom(11 * MiB + 3)  # three parts in the object store, the last one short
    w = storage.open_writer(len(data), "0123abcd")
    write_in_chunks(w, data)
    w.close()
    assert w.size == len(data) and w.head == data[:512]
    assert [(name, str(ref)) for name, ref, _ in storage.uploads()] == [("0123abcd", str(w.path))]
    assert storage.partial_uploads() == []
    for _ in range(2):  # the object store: first the gateway's spool, then a download (as a worker does)
        with storage.local_copy(w.path) as local:
            assert local.read_bytes() == data
    storage.delete(w.path)
    assert stored(storage, tmp_path / "up") == []
    assert storage.ready() == (True, "")


def test_an_upload_aborted_after_close_is_removed(make_storage, tmp_path):
    storage = make_storage(tmp_path / "up")
    w = storage.open_writer(100)
    w.write(b"abc")
    w.close()
    w.abort()
    assert stored(storage, tmp_path / "up") == []


def test_delete_is_idempotent_and_confined(make_storage, tmp_path):
    storage = make_storage(tmp_path / "up")
    w = storage.open_writer(10)
    w.write(b"abc")
    w.close()
    storage.delete(w.path)
    storage.delete(w.path)  # already gone: quiet
    assert storage.uploads() == []
    if make_storage.kind == "local":
        outside = tmp_path / "other"
        outside.write_bytes(b"keep")
        with pytest.raises(ValueError):
            storage.delete(outside)
        assert outside.exists()
        return
    bucket, prefix = storage.bucket, storage.prefix
    storage.client.put_object(Bucket=bucket, Key="elsewhere/abc.upload", Body=b"keep")
    for ref in (f"s3://{bucket}/elsewhere/abc.upload", f"s3://other-bucket/{prefix}abc.upload",
                f"s3://{bucket}/{prefix}notes.txt", f"s3://{bucket}/{prefix}../abc.upload", str(tmp_path / "x")):
        with pytest.raises(ValueError):
            storage.delete(ref)
    assert storage.client.get_object(Bucket=bucket, Key="elsewhere/abc.upload")["Body"].read() == b"keep"
    storage.client.delete_object(Bucket=bucket, Key="elsewhere/abc.upload")


def test_sniff_accepts_real_video_and_rejects_other_things():
    assert sniff_video(carphone_path().read_bytes()[:512])
    assert sniff_video(b"\x1a\x45\xdf\xa3" + b"\0" * 20)  # Matroska/WebM
    assert sniff_video(b"RIFF\0\0\0\0AVI LIST")
    assert not sniff_video(b"")
    assert not sniff_video(b"hello, this is plain text, not a video at all")
    assert not sniff_video(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)


def test_directory_0700_and_files_0600_whatever_the_umask(tmp_path):
    old = os.umask(0o000)
    try:
        storage = LocalUploadStorage(tmp_path / "a" / "up")
        w = storage.open_writer(10, "0123abcd")
        w.write(b"abc")
        w.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "up").stat().st_mode) == 0o700
    assert w.path.name == "0123abcd.upload" and stat.S_IMODE(w.path.stat().st_mode) == 0o600
    assert [name for name, _, _ in storage.uploads()] == ["0123abcd"]


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722, 0o1777])
def test_a_group_or_world_writable_directory_is_refused(make_storage, tmp_path, mode):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, mode)
    with pytest.raises(UnsafeUploadDir):
        make_storage(d)
    os.chmod(d, 0o755)  # readable by others but writable only by us: accepted (files inside are 0600)
    make_storage(d)


def test_a_symlinked_directory_is_refused(make_storage, tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeUploadDir):
        make_storage(tmp_path / "link")


def test_names_cannot_escape_the_directory(make_storage, tmp_path):
    storage = make_storage(tmp_path / "up")
    for bad in ("../x", "a/b", "x.upload"):
        with pytest.raises(ValueError):
            storage.open_writer(10, bad)


def test_the_default_location_is_per_user_and_not_shared_tmp(monkeypatch, tmp_path):
    monkeypatch.delenv("DJLDML_UPLOAD_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert Settings().upload_dir == tmp_path / "cache" / "djldml" / "uploads"
    monkeypatch.delenv("XDG_CACHE_HOME")
    d = default_upload_dir()
    assert d.is_relative_to(Path.home()) and not d.is_relative_to(tempfile.gettempdir())


@pytest.mark.integration
def test_gateway_and_worker_refuse_to_start_on_a_world_writable_upload_dir(tmp_path):
    import subprocess
    import sys

    from devstack import free_port

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJLDML_")}
    env.update(DJLDML_UPLOAD_DIR=str(shared), DJLDML_MODEL_STORE=str(tmp_path))
    gateway = subprocess.run([sys.executable, "-m", "service", "--port", str(free_port())], env=env,
                             capture_output=True, text=True, timeout=90, check=False)
    assert gateway.returncode != 0 and "world-writable" in gateway.stderr, gateway.stderr[-2000:]
    env["DJLDML_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # never reached: it stops before
    worker = subprocess.run([sys.executable, "-m", "celery", "-A", "service.celery_app:celery_app", "worker",
                             "--concurrency", "1", "--without-gossip", "--without-mingle"], env=env,
                            capture_output=True, text=True, timeout=90, check=False)
    assert worker.returncode == 2 and "world-writable" in worker.stdout + worker.stderr
