"""Video jobs: one uploaded video in; `frames.jsonl`, an annotated video and `summary.json` out.

`probe` checks an upload before it becomes a job (container, codec, size, duration, frame count) and
counts the frames to analyse; `job` streams the video through decode, predict (several frames in
flight), tracking, drawing and encode with a bounded buffer, so memory does not grow with the length.
PyAV (FFmpeg's libraries, with their codecs, from PyPI) is imported only here and by video uploads.
"""
