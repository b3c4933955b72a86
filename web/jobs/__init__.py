"""Jobs: many pictures in one go. This package holds the pure parts the queue and the worker call:
reading an uploaded archive (`archives`) and writing the result files (`exporters`)."""
