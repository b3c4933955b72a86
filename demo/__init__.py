"""The demo models' own pipeline: synthetic data sets, training, export into tf_server/models, and
evaluation (`python -m demo`, `make demo-model`). It sits beside `tf_server`, not in it: it uses the
gateway's picture code (`web`), and the model server imports nothing from either."""
