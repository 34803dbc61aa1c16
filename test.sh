#!/usr/bin/env bash
# Run the whole test suite (unit, API, and integration against a private redis-server, real RQ
# workers, SQLite and PostgreSQL warehouses). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./bootstrap.sh
exec .venv/bin/python -m pytest "$@"
