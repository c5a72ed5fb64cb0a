"""Upload storage: random names, the size limit fires while streaming, sniffing, safe deletion, private
permissions (0700 directory, 0600 files, unsafe directories refused)."""

import os
import stat
import tempfile
from pathlib import Path

import pytest

from service.settings import Settings
from service.storage import LocalUploadStorage, UnsafeUploadDir, UploadTooLarge, default_upload_dir, sniff_video
from tests.media import carphone_path


def test_writer_refuses_past_the_limit_and_leaves_nothing(tmp_path):
    storage = LocalUploadStorage(tmp_path)
    w = storage.open_writer(limit=100)
    w.write(b"x" * 60)
    with pytest.raises(UploadTooLarge):
        w.write(b"x" * 41)
    assert list(tmp_path.iterdir()) == []


def test_names_are_random_and_private(tmp_path):
    storage = LocalUploadStorage(tmp_path / "up")
    a, b = storage.open_writer(10), storage.open_writer(10)
    a.close(), b.close()
    assert a.path != b.path and a.path.parent == b.path.parent == tmp_path / "up"
    assert (tmp_path / "up").stat().st_mode & 0o077 == 0


def test_delete_is_idempotent_and_confined(tmp_path):
    storage = LocalUploadStorage(tmp_path / "up")
    w = storage.open_writer(10)
    w.write(b"abc")
    w.close()
    storage.delete(w.path)
    storage.delete(w.path)  # already gone: quiet
    outside = tmp_path / "other"
    outside.write_bytes(b"keep")
    with pytest.raises(ValueError):
        storage.delete(outside)
    assert outside.exists()


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
def test_a_group_or_world_writable_directory_is_refused(tmp_path, mode):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, mode)
    with pytest.raises(UnsafeUploadDir):
        LocalUploadStorage(d)
    os.chmod(d, 0o755)  # readable by others but writable only by us: accepted (files inside are 0600)
    LocalUploadStorage(d)


def test_a_symlinked_directory_is_refused(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeUploadDir):
        LocalUploadStorage(tmp_path / "link")


def test_names_cannot_escape_the_directory(tmp_path):
    storage = LocalUploadStorage(tmp_path / "up")
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
