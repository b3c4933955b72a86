"""TF Serving's ``BatchingParameters``, which no installed package ships, rebuilt from its field
numbers so the tests can parse the batching file with protobuf's own text format.
(``MonitoringConfig`` is the local model server's own, ``tf_server.monitoring.MonitoringConfig``.)"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2


def _message_class(file_proto: descriptor_pb2.FileDescriptorProto, name: str) -> Any:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def _schema(package: str, messages: dict[str, list[tuple[str, int, str, str | None]]]) -> Any:
    """A throwaway FileDescriptorProto: ``{message: [(field, number, type, type_name)]}``."""
    types = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{package}.proto",
        package=package,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    for message, fields in messages.items():
        msg = proto.message_type.add(name=message)
        for field, number, kind, type_name in fields:
            repeated = kind.startswith("repeated ")
            kind = kind.removeprefix("repeated ")
            entry = msg.field.add(
                name=field,
                number=number,
                type=getattr(types, f"TYPE_{kind.upper()}"),
                label=types.LABEL_REPEATED if repeated else types.LABEL_OPTIONAL,
            )
            if type_name:
                entry.type_name = type_name
    return proto


def batching_parameters_class() -> Any:
    """TF Serving's BatchingParameters (session_bundle_config.proto), fields 1-7, rebuilt here."""
    int64 = ".google.protobuf.Int64Value"
    proto = _schema(
        "tensorflow.serving",
        {
            "BatchingParameters": [
                ("max_batch_size", 1, "message", int64),
                ("batch_timeout_micros", 2, "message", int64),
                ("max_enqueued_batches", 3, "message", int64),
                ("num_batch_threads", 4, "message", int64),
                ("thread_pool_name", 5, "message", ".google.protobuf.StringValue"),
                ("allowed_batch_sizes", 6, "repeated int64", None),
                ("pad_variable_length_inputs", 7, "bool", None),
            ]
        },
    )
    return _message_class(proto, "tensorflow.serving.BatchingParameters")
