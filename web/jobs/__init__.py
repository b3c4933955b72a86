"""Jobs: many pictures in one go, spread over any number of workers.

`archives` reads an uploaded zip safely, `store` keeps every job's state as files under JOBS_FOLDER,
`queue` carries chunks of pictures to the workers (Huey: SQLite embedded, Redis across machines),
`runner` is what a worker does with a chunk (predict, claim, heartbeat, recover lost chunks, assemble
the results), and `exporters` write the result files. `python -m web.worker` runs a worker.
"""
