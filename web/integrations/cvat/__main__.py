"""`python -m web.integrations.cvat function-yaml MODEL --gateway URL [--api-key KEY] [--out FILE]`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from web.integrations.cvat.function_yaml import FunctionSpec


def _get(url: str, api_key: str | None, timeout: float) -> dict:
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web.integrations.cvat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("function-yaml", help="write deploy/cvat's function.yaml for a model")
    make.add_argument("model")
    make.add_argument("--gateway", default=os.environ.get("GATEWAY_URL", "http://localhost:5000"),
                      help="the gateway's URL as the function will reach it ($GATEWAY_URL)")  # fmt: skip
    make.add_argument(
        "--query-url", help="where to ask for the labels, if not --gateway (e.g. from this machine)"
    )
    make.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"), help="$GATEWAY_API_KEY")
    make.add_argument("--out", type=Path, help="the file to write (default: standard output)")
    make.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    base = (args.query_url or args.gateway).rstrip("/")
    model = urllib.parse.quote(args.model, safe="")
    try:
        labels = _get(f"{base}/api/v1/models/{model}/labels", args.api_key, args.timeout)
        detail = _get(f"{base}/api/v1/models/{model}", args.api_key, args.timeout)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        print(f"error: the gateway answered {exc.code}: {message}", file=sys.stderr)
        return 2
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: cannot reach the gateway at {base}: {exc}", file=sys.stderr)
        return 2
    if not labels:
        print(
            f"error: model {args.model} has no labels (add a label_map.pbtxt or labels.txt)", file=sys.stderr
        )
        return 2
    spec = FunctionSpec(
        args.model, {int(k): v for k, v in labels.items()}, detail.get("kind", ""), args.gateway
    )
    text = spec.to_yaml()
    if args.out:
        args.out.write_text(text)
        print(
            f"wrote {args.out}: {len(labels)} labels, {spec.cvat_spec()[0]['type']} shapes", file=sys.stderr
        )
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
