"""CVAT auto-annotation: `python -m web.integrations.cvat function-yaml MODEL --gateway URL` writes the
nuclio function.yaml (the model's labels as CVAT's `spec`) for the function in deploy/cvat/."""
