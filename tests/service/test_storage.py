"""Upload storage: random names, the size limit fires while streaming, sniffing, safe deletion."""

import pytest

from service.storage import LocalUploadStorage, UploadTooLarge, sniff_video
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
