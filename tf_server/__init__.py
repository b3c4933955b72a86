"""The model-server side of the project.

``python -m tf_server`` runs a local, TensorFlow-Serving-compatible gRPC model server (same
services, flags, folder layout, ``models.config`` and status codes as ``tensorflow_model_server``)
so the gateway and its tests work without Docker or a GPU. It stands alone: it imports nothing
from ``web`` (the gateway) or ``demo`` (the top-level package that trains and exports the demo
models it serves).

This package's ``__init__`` stays free of TensorFlow imports on purpose: processes that only read
its constants or parse its configs (the tests, ``tools/``) must not load the TensorFlow runtime.
"""
