"""Readiness (`GET /readyz`): the model server answers and every configured model is AVAILABLE."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web.errors import GatewayError
from web.reading.registry import ModelRegistry

READINESS_TIMEOUT_S = 2.0


@dataclass
class Readiness:
    ready: bool
    reason: str
    models: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def check_readiness(registry: ModelRegistry, model_config_file: Path, grpc_timeout_s: float) -> Readiness:
    """Whether the model server answers and every configured model has an AVAILABLE version; each
    status call waits at most READINESS_TIMEOUT_S (a probe must answer before its own timeout)."""
    try:
        entries = registry.entries()
    except GatewayError as exc:
        return Readiness(False, exc.message)
    timeout = min(READINESS_TIMEOUT_S, grpc_timeout_s)
    states: dict[str, list[dict[str, Any]]] = {}
    problems = []
    for entry in entries:
        try:
            versions = registry.versions(entry.name, timeout=timeout)
        except GatewayError as exc:
            return Readiness(False, exc.message, states)
        states[entry.name] = [{"version": v.version, "state": v.state} for v in versions]
        if not any(v.state == "AVAILABLE" for v in versions):
            seen = ", ".join(f"version {v.version} is {v.state}" for v in versions)
            problems.append(
                f"model '{entry.name}' has no AVAILABLE version ({seen or 'the server does not know it'})"
            )
    if not entries:
        problems.append(f"MODEL_CONFIG_FILE {model_config_file} lists no models")
    return Readiness(not problems, "; ".join(problems) or "ready", states)
