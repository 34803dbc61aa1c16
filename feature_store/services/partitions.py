"""Coordination of a partitioned extraction run across RQ workers, in Redis.

A run with EXTRACT_PARTITIONS = N > 1 splits every entity table into N id ranges. The run's job
enqueues one partition job per range, then works through the partitions itself too, so a run
never waits on a worker that is busy running it. Whoever claims a partition first runs it; a
claim belongs to a job id, so a retried job (its worker died) takes its own partitions back.
The run's job waits until every partition is done, then removes the values of gone entities.

Keys (single-key commands only; they expire with the run's job record):
    feature-store:run:{run}:plan       JSON {"computed_at", "ranges": [...]}
    feature-store:run:{run}:claim:{i}  job id that owns partition i
    feature-store:run:{run}:done       hash partition -> JSON counts
    feature-store:run:{run}:failed     hash partition -> error
"""

from __future__ import annotations

import json

import redis

_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
if owner == ARGV[1] then return 1 end
return 0
"""


class RunPartitions:
    def __init__(self, connection: redis.Redis, run_id: str, ttl: int) -> None:
        self.redis = connection
        self.run_id = run_id
        self.ttl = ttl
        self._claim = connection.register_script(_CLAIM)

    def _key(self, suffix: str) -> str:
        return f"feature-store:run:{self.run_id}:{suffix}"

    def plan(self, make) -> dict:
        """The run's plan: made once by `make()` and kept, so a retried run reuses it."""
        stored = self.redis.get(self._key("plan"))
        if stored is not None:
            return json.loads(stored)
        plan = make()
        if self.redis.set(self._key("plan"), json.dumps(plan), nx=True, ex=self.ttl):
            return plan
        return json.loads(self.redis.get(self._key("plan")))

    def claim(self, index: int, owner: str) -> bool:
        return bool(self._claim(keys=[self._key(f"claim:{index}")], args=[owner, self.ttl]))

    def owner(self, index: int) -> str | None:
        owner = self.redis.get(self._key(f"claim:{index}"))
        return owner.decode() if owner is not None else None

    def take_over(self, index: int, owner: str) -> None:
        """Claim partition `index` whoever held it (its job is not running)."""
        self.redis.set(self._key(f"claim:{index}"), owner, ex=self.ttl)

    def done(self, index: int, counts: dict) -> None:
        self.redis.hset(self._key("done"), str(index), json.dumps(counts))
        self.redis.expire(self._key("done"), self.ttl)

    def failed(self, index: int, error: str) -> None:
        self.redis.hset(self._key("failed"), str(index), error)
        self.redis.expire(self._key("failed"), self.ttl)

    def state(self) -> tuple[dict[int, dict], dict[int, str]]:
        done = {int(k): json.loads(v) for k, v in self.redis.hgetall(self._key("done")).items()}
        failed = {int(k): v.decode() for k, v in self.redis.hgetall(self._key("failed")).items()}
        return done, failed
