"""The application in a Ray instance of its own, until killed: for whole-app crash tests.

python -m tests.integration.app_process ARGS.json PORT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import ray
from ray import serve

from serve_app.graph import build_app


def main() -> None:
    args = json.loads(Path(sys.argv[1]).read_text())
    port = int(sys.argv[2])
    # address="local": a new instance, never the test session's own.
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="crash-test", route_prefix="/")
    print("READY", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
