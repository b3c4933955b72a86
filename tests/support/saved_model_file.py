"""Read a ``saved_model.pb`` without TensorFlow: the test processes never import it, and the
``SavedModel`` wrapper message is not among the vendored protos (only ``MetaGraphDef`` is)."""

from __future__ import annotations

from web.serving.protos.tensorflow.core.protobuf import meta_graph_pb2


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def meta_graphs(saved_model_pb: bytes) -> list[meta_graph_pb2.MetaGraphDef]:
    """The MetaGraphDefs of a SavedModel file (field 2 of ``tensorflow.SavedModel``; field 1, the
    schema version, is skipped)."""
    graphs, pos = [], 0
    while pos < len(saved_model_pb):
        key, pos = _read_varint(saved_model_pb, pos)
        if key & 7 == 0:
            _, pos = _read_varint(saved_model_pb, pos)
            continue
        size, pos = _read_varint(saved_model_pb, pos)
        if key >> 3 == 2:
            graphs.append(meta_graph_pb2.MetaGraphDef.FromString(saved_model_pb[pos : pos + size]))
        pos += size
    return graphs
