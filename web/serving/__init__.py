"""Talking to TensorFlow Serving: the one gRPC client (`client`), numpy <-> TensorProto (`tensors`),
the `PredictRequest` builder (`requests`) and TF Serving's generated messages (`protos/`, vendored so
the gateway never imports TensorFlow). Nothing above this package sees a protobuf type."""
