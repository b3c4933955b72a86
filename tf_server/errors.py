"""Failures that become gRPC statuses, with TF Serving's codes and (close to) its messages."""

from __future__ import annotations

import logging
from typing import Any

import grpc

log = logging.getLogger("tf_server")


class ServingError(Exception):
    """A request the server answers with a non-OK gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def describe_unexpected(error: BaseException) -> str:
    """A one-line description of an error no request should cause (at most 300 characters)."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:300] + "..."


def log_unexpected(error: BaseException, message: str, *args: Any) -> None:
    """An error no request should cause: one log line (the traceback only at debug level)."""
    log.error(message + ": %s", *args, describe_unexpected(error))
    log.debug("The traceback of that error", exc_info=error)
