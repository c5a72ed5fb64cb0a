"""TorchServe's entry file: ``trainer export`` packs it at the archive root as the model's ``--handler``.

TorchServe imports it by file and calls the module-level :func:`handle`; all logic lives in
:mod:`djldml.serving.handler`, packed beside it with the djldml sources it imports. Imports only ``djldml``.
"""

from djldml.serving.handler import handle

__all__ = ["handle"]
