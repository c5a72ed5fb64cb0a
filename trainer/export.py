"""``trainer export``: a trained model → ``model_store/<name>.mar``, the archive TorchServe and the service load.

The archive holds
- ``model.pt``: the djldml.model_file dict (net config + state dict; loads with ``weights_only=True``);
- ``torchserve_handler.py``: TorchServe's entry file (djldml/serving/torchserve_handler.py) and, beside it, the
  ``djldml`` sources it imports (djldml/serving/handler.py and on, found by following its imports), so the .mar
  runs in a stock TorchServe image;
- ``model_card.json``: name, version, synthetic flag, net/training config, metrics, data description;
- ``model-config.yaml``: TorchServe's batching (batchSize, maxBatchDelay) and the handler's knobs;
- ``openvino/model.xml`` + ``model.bin``: the same network as OpenVINO IR, what CPUs run (djldml.runtime).

The archive's own sha256 cannot be inside it: readers compute it (djldml.model_archive).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from djldml.atomic import atomic_path
from djldml.faces.provenance import selection
from djldml.model_card import CARD_FILENAME, ModelCard, file_sha256
from djldml.model_file import MODEL_FILENAME, load_model, read_model_file
from djldml.runtime import write_ir

from .store import INFO as STORE_INFO

REPO = Path(__file__).resolve().parent.parent
#: TorchServe's entry file, found by module name: the archive depends on djldml alone, never on service/.
HANDLER = Path(importlib.util.find_spec("djldml.serving.torchserve_handler").origin)
CORE = REPO / "djldml"

#: TorchServe batching of the exported model: up to BATCH_SIZE requests (each a batch of clips) are run
#: together when they arrive within MAX_BATCH_DELAY_MS of each other.
BATCH_SIZE = 8
MAX_BATCH_DELAY_MS = 20
RESPONSE_TIMEOUT_S = 120


CLIP_BATCH = 16  # clips per network forward in the handler (model-config.yaml handler.clip_batch)


def model_config_yaml(batch_size: int = BATCH_SIZE, max_batch_delay_ms: int = MAX_BATCH_DELAY_MS,
                      clip_batch: int = CLIP_BATCH, amp: bool = False) -> str:
    """TorchServe's per-model config (packed as model-config.yaml); ``handler:`` is read by our handler."""
    config = {"batchSize": batch_size, "maxBatchDelay": max_batch_delay_ms, "responseTimeout": RESPONSE_TIMEOUT_S,
              "handler": {"clip_batch": clip_batch, "amp": amp}}
    return yaml.safe_dump(config, sort_keys=False)


# ---------------------------------------------------------------------------------------------- sources


def _djldml_imports(path: Path) -> set[str]:
    """Names of the djldml modules ``path`` imports (absolute ``djldml.x`` or relative from inside djldml)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside = path.parent == CORE or CORE in path.parents
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "djldml"}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] == "djldml":
                base = node.module
            elif node.level == 1 and inside:
                base = "djldml" + (f".{node.module}" if node.module else "")
            else:
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from djldml import labels` names a module
    return found


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (REPO / rel.with_suffix(".py"), REPO / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None  # an attribute, not a module (e.g. djldml.clips.to_tensor)


def handler_sources(handler: Path = HANDLER) -> list[Path]:
    """The djldml files the handler needs, transitively (with each package's ``__init__.py``), sorted."""
    todo, seen = [handler], set()
    files: set[Path] = set()
    while todo:
        for name in _djldml_imports(todo.pop()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # every package on the way: djldml/__init__.py, ...
                f = _module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    files.add(f)
                    todo.append(f)
    return sorted(files)


# ---------------------------------------------------------------------------------------------- model file


def training_preprocessing(training: dict[str, Any]) -> dict[str, Any]:
    """How the faces a model trained on were made: the prepared dataset's record (``dataset.json``, written by
    ``trainer prepare``), with the clip geometry the training actually used (clips of ``clip_length`` frames,
    every ``clip_stride``-th: the store itself holds every frame). Empty when the dataset is not at hand."""
    info_path = Path(str(training.get("data", ""))) / STORE_INFO
    try:
        record = json.loads(info_path.read_text()).get("preprocessing") or {}
    except (OSError, ValueError):
        return {}
    if record:
        face_config = dict(record.get("face_config") or {})
        for key, train_key in (("clip_length", "clip_length"), ("temporal_stride", "clip_stride")):
            if train_key in training:
                face_config[key] = training[train_key]
        record = {**record, "face_config": face_config}
        if training.get("eval_clips_per_video"):  # the selection the evaluation used: the service uses it too
            record["selection"] = selection(int(training["eval_clips_per_video"]))
    return record


def training_inference(training: dict[str, Any], run: str | Path | None = None) -> dict[str, Any]:
    """The card's ``inference`` section: how the evaluation computed clip distributions beyond the network —
    mirror averaging, the input dynamics (djldml.clips.INPUT_DYNAMICS), the input normalisation when not the
    default (trainer/normalisation.py) — and the
    calibration of ``run``'s ``calibration.json`` when there is one (trainer/calibrate.py)."""
    from .calibration_file import run_calibration
    from .normalisation import training_normalisation

    section: dict[str, Any] = {"mirror_average": bool(training.get("test_time_mirror", False)),
                               "input_dynamics": str(training.get("input_dynamics", "none"))}
    normalisation = training_normalisation(training)
    if normalisation is not None:
        section["input_normalisation"] = normalisation.to_dict()
    calibration = run_calibration(run) if run is not None else None
    if calibration is not None:
        section["calibration"] = calibration.to_dict()
    return section


def _archiver() -> list[str]:
    exe = Path(sys.executable).parent / "torch-model-archiver"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("torch-model-archiver")
    if found is None:
        raise RuntimeError("torch-model-archiver not found (pip install torch-model-archiver==0.12.0)")
    return [found]


# ---------------------------------------------------------------------------------------------- export


def export_model(model_file_or_best_ckpt: str | Path, out_mar: str | Path, name: str, version: str,
                 card: ModelCard | dict[str, Any] | None = None, *, batch_size: int = BATCH_SIZE,
                 max_batch_delay_ms: int = MAX_BATCH_DELAY_MS, amp: bool = False, openvino_ir: bool = True) -> Path:
    """Package a model file, a best.pt checkpoint or a run dir as a TorchServe archive at ``out_mar``; returns it.

    ``card`` supplies description, synthetic flag, training config, metrics and data description; name,
    version and net_config are set here from the arguments and the model file. ``openvino_ir``: also pack the
    network as OpenVINO IR (``openvino/model.xml`` + ``.bin``, float32, as large again as the weights), what
    djldml.runtime runs on CPUs; without it the service converts the state dict at load time (slower start).
    """
    model, facts = read_model_file(model_file_or_best_ckpt)
    fields = card.to_dict() if isinstance(card, ModelCard) else dict(card or {})
    if not fields.get("training") and "config" in facts:
        fields["training"] = facts["config"]
    if not fields.get("metrics") and facts.get("dev"):
        fields["metrics"] = {"dev": facts["dev"], "best_epoch": facts.get("epoch")}
    if not fields.get("preprocessing"):
        fields["preprocessing"] = training_preprocessing(fields.get("training") or {})
    if not fields.get("inference"):
        fields["inference"] = training_inference(fields.get("training") or {}, model_file_or_best_ckpt)
    fields.update(name=name, version=str(version), net_config=model["net_config"])
    fields.setdefault("synthetic_demo", False)
    fields.pop("created", None)  # stamped now
    out_mar = Path(out_mar).resolve()
    out_mar.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="djldml-export-") as tmp:
        stage = Path(tmp)
        torch.save(model, stage / MODEL_FILENAME)
        net = load_model(stage / MODEL_FILENAME)  # refuse to package weights that do not load into their network
        card_obj = ModelCard.from_dict({**fields, "model_sha256": file_sha256(stage / MODEL_FILENAME)})
        extra = stage / "extra"  # its *contents* land at the archive root: djldml/..., model_card.json
        if openvino_ir:  # the CPU engine's model, so loading it is a read, not a conversion (djldml.runtime)
            write_ir(net, str(extra), card_obj.model_sha256)
        del net
        for src in handler_sources():
            dst = extra / src.relative_to(REPO)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        (extra / CARD_FILENAME).write_text(card_obj.to_json(), encoding="utf-8")
        (stage / "model-config.yaml").write_text(model_config_yaml(batch_size, max_batch_delay_ms, amp=amp))
        (stage / "out").mkdir()
        (stage / "tmp").mkdir()
        cmd = _archiver() + [
            "--model-name", name, "--version", str(version),
            "--serialized-file", str(stage / MODEL_FILENAME), "--handler", str(HANDLER),
            "--extra-files", str(extra), "--config-file", str(stage / "model-config.yaml"),
            "--export-path", str(stage / "out"), "--force",
        ]
        # The archiver stages files in $TMPDIR/<name>: a private TMPDIR keeps two exports from colliding.
        env = {**os.environ, "TMPDIR": str(stage / "tmp")}
        done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        built = stage / "out" / f"{name}.mar"
        if done.returncode != 0 or not built.exists():
            raise RuntimeError(f"torch-model-archiver failed ({done.returncode}): {done.stderr[-2000:]}")
        with atomic_path(out_mar) as tmp_out:  # readers never see a half-written archive
            shutil.move(str(built), tmp_out)
    return out_mar


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run directory (its best.pt), training checkpoint or model file")
    parser.add_argument("--out", default=None, help="archive path (default: model_store/<name>.mar)")
    parser.add_argument("--name", default="djldml-demo", help="TorchServe model name")
    parser.add_argument("--version", default="1.0")
    parser.add_argument("--description", default="")
    parser.add_argument("--synthetic-demo", action="store_true",
                        help="mark the model as trained on synthetic data only (never clinical)")
    parser.add_argument("--card", default=None,
                        help="JSON file with further card fields: training, metrics, data, description")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="TorchServe requests per batch")
    parser.add_argument("--max-batch-delay-ms", type=int, default=MAX_BATCH_DELAY_MS)
    parser.add_argument("--amp", action="store_true", help="float16 autocast on GPU in the handler")
    parser.add_argument("--no-openvino-ir", dest="openvino_ir", action="store_false",
                        help="leave out the OpenVINO IR (smaller archive for GPU-only serving; CPU loads convert)")


def main(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = json.loads(Path(args.card).read_text()) if args.card else {}
    if args.description:
        fields["description"] = args.description
    if args.synthetic_demo:
        fields["synthetic_demo"] = True
    out = Path(args.out or f"model_store/{args.name}.mar")
    path = export_model(args.checkpoint, out, args.name, args.version, fields, batch_size=args.batch_size,
                        max_batch_delay_ms=args.max_batch_delay_ms, amp=args.amp, openvino_ir=args.openvino_ir)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {file_sha256(path)})")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m trainer.export", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    sys.exit(main(p.parse_args()))
