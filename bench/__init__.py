"""`make bench`: what the gateway costs on top of calling the model server directly (issue 5).

Run it with ``python -m bench`` (``--help`` for the flags). This package imports nothing at
import time on purpose: ``python -m bench.tutorial`` runs in a subprocess that loads TensorFlow
and the official ``tensorflow_serving`` messages, which must never meet the gateway's vendored
copies (same protobuf names) in one process.
"""
