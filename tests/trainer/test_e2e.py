"""End to end on CPU through ``trainer demo``'s code path: synth → prepare → train → evaluate → export. The
trained model must beat the train-mean baseline on held-out synthetic subjects (the score is only in the
facial motion: see trainer/synth.py).

Sized for two shared cores; deterministic by seed. The margin was measured over seeds: docs/training.md
("The end-to-end test").
"""

from __future__ import annotations

import json
import zipfile

import pytest

from djldml.faces.provenance import SELECTION_METHOD, differences, preprocessing, scoring_config
from trainer.demo import run_demo
from trainer.store import PreparedDataset
from trainer.synth import SynthConfig

SYNTH = SynthConfig(subjects=(8, 2, 3), videos_per_subject=3, seconds=3.0, size=(240, 180))
TRAIN = {"preset": "c3d-tiny", "epochs": 8, "clips_per_video": 4, "dev_clips_per_video": 4,
         "eval_clips_per_video": 8, "l1_weight": 1.0}
MARGIN = 0.15  # the model's test MAE must be at least 15 % below the train-mean baseline's


@pytest.mark.slow
def test_synth_prepare_train_evaluate_export(tmp_path):
    result = run_demo(tmp_path / "demo.mar", work=tmp_path / "work", seed=0, synth_config=SYNTH, overrides=TRAIN,
                      progress=False)
    ds = PreparedDataset(tmp_path / "work" / "prepared")
    assert len(ds.videos) == 39 and ds.synthetic and ds.shared_subjects == {}

    metrics = result["metrics"]
    model_mae, baseline_mae = metrics["model"]["mae"], metrics["baselines"]["train_mean"]["mae"]
    assert metrics["n_videos"] == 9
    assert model_mae < (1 - MARGIN) * baseline_mae, (model_mae, baseline_mae)

    with zipfile.ZipFile(result["mar"]) as z:
        card = json.loads(z.read("model_card.json"))
    assert card["synthetic_demo"] is True and "SYNTHETIC" in card["description"]
    assert card["data"]["synthetic"] is True and card["net_config"]["width"] == 0.0625
    assert card["metrics"]["test_synthetic"]["model"]["mae"] == pytest.approx(model_mae)
    # The card records the clip contract in time — the synthetic videos' 25 fps, the evaluation's clip selection
    # and mirror averaging — and the service, cutting clips as the card says, makes them the same way.
    served = scoring_config(card["preprocessing"])
    assert differences(card["preprocessing"], preprocessing(served)) == []
    assert card["preprocessing"]["face_config"]["clip_length"] == 16
    assert card["preprocessing"]["face_config"]["fps"] == served.fps == SYNTH.fps
    selection = {"method": SELECTION_METHOD, "max_clips": TRAIN["eval_clips_per_video"]}
    assert card["preprocessing"]["selection"] == selection
    assert card["inference"]["mirror_average"] is True
    # the calibration fitted on the development subjects (trainer calibrate), which the service applies
    calibration = card["inference"]["calibration"]
    assert calibration["method"] == "gaussian" and calibration["fitted_on"]["split"] == "dev"
    assert calibration["fitted_on"]["n_videos"] == 6 and calibration["sigma"] > 0
    assert "after" in card["metrics"]["test_synthetic"]["uncertainty"]
    # the demo's figure is the service's: held-out raw videos scored through the service's path
    assert metrics["path"]["name"] == "service" and metrics["path"]["model_from"] == "run"
    assert metrics["path"]["mirror_average"] is True and metrics["path"]["refused"] == {}
    assert card["metrics"]["test_synthetic"]["path"]["name"] == "service"
