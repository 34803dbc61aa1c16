"""Real-time updates: the warehouse's committed changes, followed through a logical replication
slot of the streaming process's own, brought into the online store within a second.

    slot.py      the slot (SQL interface, test_decoding): check, create, peek, advance, drop
    decoding.py  test_decoding's text -> transactions of row changes (old and new rows)
    apply.py     changes -> affected entities (through the features' lineage) -> recomputed values
    process.py   the loop: peek, apply, confirm (at least once), waiting out outages
    status.py    the process's report in Redis, for /ready and /metrics

The entry point is `python -m workers.stream` (the Procfile's `stream` line).
"""
