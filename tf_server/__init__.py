"""The model-server side of the project.

``python -m tf_server`` runs a local, TensorFlow-Serving-compatible gRPC model server (same
services, flags, folder layout, ``models.config`` and status codes as ``tensorflow_model_server``)
so the gateway and its tests work without Docker or a GPU. ``tf_server.demo`` trains and exports
the demo models.

This package's ``__init__`` stays free of TensorFlow imports on purpose: ``tf_server.demo.synthetic``
(numpy/Pillow only) is imported by test processes that must not load the TensorFlow runtime.
"""
