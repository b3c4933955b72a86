"""TF Serving's REST JSON (``util/json_tensor.cc``, rule for rule), by concern: ``writer`` (rapidjson's
``PrettyWriter`` and number formats), ``parser`` (``ParseJson`` and the shared value rules),
``predict`` (``instances``/``inputs`` to TensorProtos, outputs to ``predictions``/``outputs``) and
``examples`` (Classify/Regress ``tf.Example`` bodies and results)."""
