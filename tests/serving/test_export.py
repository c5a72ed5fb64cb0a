"""trainer export → .mar; service.backends.archive reads it back (card, model, sha256, config)."""

from __future__ import annotations

import argparse
import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch

from djldml.errors import ModelError
from djldml.inference import clip_distributions
from djldml.model_card import ModelCard
from djldml.model_file import load_model
from service.backends.archive import list_archives, open_archive
from trainer import export

from .conftest import MODEL_NAME, random_clips


def test_archive_reads_back_card_sha256_and_model(tiny_mar, tiny_model_file):
    a = open_archive(tiny_mar)
    assert a.sha256 == hashlib.sha256(tiny_mar.read_bytes()).hexdigest()
    assert (a.card.name, a.card.version, a.card.synthetic_demo) == (MODEL_NAME, "0.1", True)
    assert a.card.net_config == load_model(tiny_model_file).config.to_dict()
    assert a.card.metrics == {"note": "untrained"} and a.card.data["synthetic"] is True
    assert a.card.model_sha256 == hashlib.sha256(zipfile.ZipFile(tiny_mar).read("model.pt")).hexdigest()
    assert a.model_config["batchSize"] == export.BATCH_SIZE and a.model_config["maxBatchDelay"] > 0
    assert a.manifest["model"]["handler"] == "torchserve_handler.py"
    info = a.model_info()
    assert info.sha256 == a.sha256 and info.synthetic_demo and info.extra["net_config"] == a.card.net_config
    clips = random_clips(2)
    np.testing.assert_array_equal(clip_distributions(a.load_network(), clips),
                                  clip_distributions(load_model(tiny_model_file), clips))


def test_archive_packs_handler_and_the_djldml_it_needs(tiny_mar):
    names = set(zipfile.ZipFile(tiny_mar).namelist())
    assert {"torchserve_handler.py", "model.pt", "model_card.json", "model-config.yaml"} <= names
    needed = {"djldml/__init__.py", "djldml/clips.py", "djldml/errors.py", "djldml/inference.py",
              "djldml/labels.py", "djldml/network.py", "djldml/model_file.py", "djldml/model_card.py"}
    assert needed <= names
    assert not any(n.startswith(("service/", "trainer/", "djldml/faces")) for n in names)


def test_handler_sources_follow_imports_transitively():
    files = {p.name for p in export.handler_sources()}
    assert {"inference.py", "clips.py", "network.py", "labels.py", "errors.py", "__init__.py"} <= files
    assert "prediction.py" not in files  # not imported by the handler


def test_best_checkpoint_is_exported_like_a_model_file(tiny_model_file, tmp_path):
    model = torch.load(tiny_model_file, weights_only=True)
    torch.save({"model": model, "epoch": 3, "dev": {"mae": 7.5}, "config": {"sigma": 2.0}}, tmp_path / "best.pt")
    out = export.export_model(tmp_path, tmp_path / "store" / "m.mar", "m", "2", ModelCard("x", "y", False))
    a = open_archive(out)
    assert (a.card.name, a.card.version, a.card.synthetic_demo) == ("m", "2", False)
    assert a.card.training == {"sigma": 2.0} and a.card.metrics == {"dev": {"mae": 7.5}, "best_epoch": 3}
    assert list_archives(tmp_path / "store")[0].sha256 == a.sha256


def test_same_model_exports_to_the_same_model_file(tiny_model_file, tmp_path):
    a = export.export_model(tiny_model_file, tmp_path / "a.mar", "a", "1", {})
    b = export.export_model(tiny_model_file, tmp_path / "b.mar", "b", "1", {})
    assert open_archive(a).card.model_sha256 == open_archive(b).card.model_sha256


@pytest.mark.parametrize("blob", [{"format": "something-else"}, {"model": {"format": "nope"}}, [1, 2]])
def test_export_refuses_what_is_not_a_model(tmp_path, blob):
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ModelError):
        export.export_model(tmp_path / "bad.pt", tmp_path / "bad.mar", "bad", "1", {})
    assert not (tmp_path / "bad.mar").exists()


def test_cli_writes_archive_with_card_fields(tiny_model_file, tmp_path, capsys):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"metrics": {"test": {"mae": 9.9}}, "data": {"source": "synthetic"}}))
    p = argparse.ArgumentParser()
    export.add_arguments(p)
    args = p.parse_args([str(tiny_model_file), "--out", str(tmp_path / "cli.mar"), "--name", "cli", "--version",
                         "3.1", "--synthetic-demo", "--card", str(card), "--description", "demo"])
    assert export.main(args) == 0
    a = open_archive(tmp_path / "cli.mar")
    assert a.card.metrics == {"test": {"mae": 9.9}} and a.card.synthetic_demo and a.card.description == "demo"
    assert a.sha256 in capsys.readouterr().out


def test_open_archive_errors(tmp_path, tiny_mar):
    with pytest.raises(ModelError):
        open_archive(tmp_path / "missing.mar")
    (tmp_path / "junk.mar").write_bytes(b"not a zip")
    with pytest.raises(ModelError):
        open_archive(tmp_path / "junk.mar")
    with zipfile.ZipFile(tmp_path / "nocard.mar", "w") as z:
        z.writestr("model.pt", b"")
    with pytest.raises(ModelError):
        open_archive(tmp_path / "nocard.mar")
    assert list_archives(tmp_path) == []  # unreadable archives are skipped


def test_model_card_round_trip_and_validation():
    card = ModelCard("n", "1", True, description="d", metrics={"mae": 1.0})
    assert ModelCard.from_json(card.to_json()) == card
    for bad in ('{"name": "n", "version": "1"}', '{"name": "n", "version": "1", "synthetic_demo": "yes"}',
                '{"format": "other", "name": "n", "version": "1", "synthetic_demo": true}', "[]", "not json"):
        with pytest.raises(ModelError):
            ModelCard.from_json(bad)


def test_export_records_how_the_training_faces_were_made(tmp_path):
    from djldml.faces import FaceConfig
    from djldml.faces.provenance import preprocessing

    data = tmp_path / "prepared"
    data.mkdir()
    record = preprocessing(FaceConfig(max_clips=None))
    (data / "dataset.json").write_text(json.dumps({"preprocessing": record}))
    # The store holds every frame; the clips the model saw were clip_length frames, every clip_stride-th.
    got = export.training_preprocessing({"data": str(data), "clip_length": 8, "clip_stride": 2})
    assert got["face_config"]["clip_length"] == 8 and got["face_config"]["temporal_stride"] == 2
    assert got["libraries"] == record["libraries"] and got["face_config"]["face_size"] == 112
    assert export.training_preprocessing({"data": str(tmp_path / "gone")}) == {}
    assert export.training_preprocessing({}) == {}


def _old_style_archive(tiny_model_file, path):
    """An archive as an older export made it: no IR, a card without calibration or provenance."""
    card = {"description": "SYNTHETIC", "synthetic_demo": True, "inference": {"mirror_average": True},
            "metrics": {"test_synthetic": {"model": {"mae": 3.0}}, "dev": {"mae": 4.0}}}
    return export.export_model(tiny_model_file, path, "old", "1.0", card, batch_size=4, openvino_ir=False)


def test_from_mar_keeps_the_weights_and_adds_calibration_ir_and_provenance(tiny_model_file, tmp_path, capsys):
    old = open_archive(_old_style_archive(tiny_model_file, tmp_path / "old.mar"))
    assert "openvino/model.xml" not in zipfile.ZipFile(old.path).namelist()
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"method": "gaussian", "sigma": 4.5, "interval_mass": 0.9}))
    measured = tmp_path / "metrics.json"
    measured.write_text(json.dumps({"n_videos": 2, "model": {"mae": 3.0}, "uncertainty": {"coverage": 1.0},
                                    "out_dir": "/somewhere/else"}))
    p = argparse.ArgumentParser()
    export.add_arguments(p)
    args = p.parse_args(["--from-mar", str(old.path), "--calibration", str(cal), "--out", str(tmp_path / "new.mar"),
                         "--metrics", f"test_synthetic={measured}"])
    assert export.main(args) == 0
    new = open_archive(tmp_path / "new.mar")
    assert new.sha256 in capsys.readouterr().out and new.sha256 != old.sha256
    assert new.card.model_sha256 == old.card.model_sha256  # the same model file, byte for byte
    assert zipfile.ZipFile(new.path).read("model.pt") == zipfile.ZipFile(old.path).read("model.pt")
    assert {"openvino/model.xml", "openvino/model.bin"} <= set(zipfile.ZipFile(new.path).namelist())
    assert (new.card.name, new.card.version, new.card.synthetic_demo) == ("old", "1.0", True)
    assert new.card.inference["calibration"]["sigma"] == 4.5 and new.card.inference["mirror_average"] is True
    assert new.card.inference["input_dynamics"] == "none"  # filled in as a fresh export would
    assert new.card.metrics == {"test_synthetic": {"n_videos": 2, "model": {"mae": 3.0},
                                                   "uncertainty": {"coverage": 1.0}}, "dev": {"mae": 4.0}}
    assert new.model_config["batchSize"] == 4  # the old archive's TorchServe config kept
    prov = new.card.provenance
    assert prov["from_archive"] == {"file": "old.mar", "sha256": old.sha256, "version": "1.0",
                                    "created": old.card.created}
    assert "inference.calibration" in prov["changed"] and prov["re_exported"] >= old.card.created
    assert new.model_info().extra["provenance"] == prov  # what GET /models shows
    clips = random_clips(2)
    np.testing.assert_array_equal(clip_distributions(new.load_network(), clips),
                                  clip_distributions(old.load_network(), clips))
    # re-exported again: the chain is kept, the version may move on
    again = open_archive(export.refresh_archive(new.path, tmp_path / "again.mar", version="1.2"))
    assert again.card.version == "1.2" and again.card.provenance["previous"] == prov
    assert again.card.inference["calibration"] == new.card.inference["calibration"]


def test_from_mar_refuses_a_model_file_that_does_not_match_its_card(tiny_model_file, tmp_path):
    old = _old_style_archive(tiny_model_file, tmp_path / "old.mar")
    bad = tmp_path / "bad.mar"
    with zipfile.ZipFile(old) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "model_card.json":
                data = json.dumps({**json.loads(data), "model_sha256": "0" * 64}).encode()
            dst.writestr(item, data)
    with pytest.raises(ModelError, match="model_sha256"):
        export.refresh_archive(bad, tmp_path / "new.mar")
    assert not (tmp_path / "new.mar").exists()


def test_cli_refuses_calibration_without_from_mar(tiny_model_file, tmp_path):
    p = argparse.ArgumentParser()
    export.add_arguments(p)
    with pytest.raises(SystemExit):
        export.main(p.parse_args([str(tiny_model_file), "--calibration", str(tmp_path / "c.json")]))
