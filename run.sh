#!/usr/bin/env bash
# Run the feature store on port 25000. Without REDIS_URL: embedded mode (demo SQLite warehouse,
# in-process Redis stand-in, inline jobs). With REDIS_URL: the web process of a real deployment
# (start workers with the Procfile's worker line).
set -euo pipefail
cd "$(dirname "$0")"
./bootstrap.sh
exec .venv/bin/python -m feature_store "$@"
