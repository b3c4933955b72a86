"""Label Studio ML backend: the project's labeling config read (`label_config`), the model's labels
mapped onto it and its answer turned into regions (`regions`), the task pictures fetched safely
(`pictures`), and the HTTP protocol Label Studio speaks (`backend`: health, setup, predict, webhook)."""
