"""What a job kind plugs into the runner, and what the runner hands it.

A kind that reads pictures chunk by chunk ends in a finisher, which gets an `Assembly` (the job, its
chunk records in picture order); a kind that streams one input (a video) is a streamer, which gets a
`Stream`. Both raise the runner's exceptions: `JobError` fails the job, `Stopped` stops quietly,
`PictureError` skips one picture. The kinds (web.jobs.evaluate, web.jobs.video) import this module,
never the runner, which imports them when a worker first meets their kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web.jobs.archives import Archive
from web.jobs.config import JobSettings
from web.jobs.store import Job


class PictureError(Exception):
    """This picture cannot be predicted (not decodable, too large): listed in `skipped`, the job goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobError(Exception):
    """Nothing in this job can succeed (unknown model, refused key): the job fails at once, with this."""


class Stopped(Exception):
    """The job was cancelled, failed or deleted, or another worker took the chunk over: stop quietly."""


@dataclass
class Assembly:
    """What a finisher gets: the job, its results folder, its chunk records in picture order, a stop check.

    `lines()` yields {"file", "prediction"} or {"file", "skipped"} per picture; a finisher writes its result
    files into `folder` (whole or not at all), returns {file name: path}, and raises `Stopped` when
    `stopped()` says the job was cancelled or deleted.
    """

    job: Job
    folder: Path
    read_lines: Callable[[], Iterator[dict[str, Any]]]
    stopped: Callable[[], bool]
    omitted: list[dict[str, str]] = field(default_factory=list)  # pictures one format could not hold
    model_version: int | None = None  # the version that answered, when the job asked for the latest
    archive: Callable[[], Archive] | None = None  # the job's pictures (an evaluation draws some)

    @property
    def job_folder(self) -> Path:
        """The job's own folder (results/ is in it; so is an evaluate job's dataset.json)."""
        return self.folder.parent

    def lines(self) -> Iterator[dict[str, Any]]:
        return self.read_lines()


Finisher = Callable[[Assembly], Mapping[str, Path]]


@dataclass
class Stream:
    """What a streamer gets: a job whose one input file (`input`) one worker handles whole, as a stream.

    `predict(data, name)` is one picture's prediction JSON with the job's model and options, retried while
    the model server is away (it raises `PictureError` for a picture the gateway refuses); `progress(n)`
    reports n units done (the job's `total` counts them); a streamer checks `stopped()` often and raises
    `Stopped` when it says so, writes its result files into `folder` whole (temporary names, renamed at
    the end: a worker killed midway leaves only temporaries, which the next try removes), sets
    `model_version`, and returns {file name: path}. `JobError` fails the job with its message.
    """

    job: Job
    input: Path
    folder: Path
    predict: Callable[[bytes, str], dict[str, Any]]
    stopped: Callable[[], bool]
    progress: Callable[[int], None]
    settings: JobSettings
    model_version: int | None = None


Streamer = Callable[[Stream], Mapping[str, Path]]
