"""Serving a model file: the request handling both TorchServe (via ``torchserve_handler``) and the in-process
backend run, so the two backends compute the same numbers."""
