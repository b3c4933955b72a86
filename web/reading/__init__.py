"""How the gateway reads a model: models.config and version states (`registry`), the signature
(`signatures`), the settings beside the model (`model_settings`: gateway.toml, `export_metadata`,
`label_maps`), and the adapter that turns the model's tensors into the domain's detections or
classes (`adapters/`, one module per model family)."""
