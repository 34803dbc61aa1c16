"""Which extraction run is in progress, which one waits behind it, and what each will refresh.

At most two runs exist at a time: the *current* run (queued or running) and the *next* run
(waiting behind a current run that started and does not refresh everything asked of it). A
request joins the current run when that run covers its features, or while it has not started
(its features grow to include the request's); otherwise it joins the next run the same way, or
creates it. A run's features are sealed when it starts, so a run never changes once it reads.

The next run is not in RQ's queue while it waits (no worker holds it): it is enqueued when it is
promoted to current, by the run before it as that one ends, or by whoever next finds that run
over (a request, a scheduler, a waiting caller), e.g. after its worker died. Enqueueing is
claimed in its record (`enqueued`), so it happens once; a claim older than a grace period whose
job is still not queued is taken over (its claimer died in between).

Keys (in the RQ Redis; each script names its keys):
    feature-store:extraction:current      job id of the current run
    feature-store:extraction:next         job id of the run that waits for it
    feature-store:run:{job_id}:features   hash: features ("*" or comma-separated), sealed ("1")
"""

from __future__ import annotations

import redis

CURRENT_RUN_KEY = "feature-store:extraction:current"
NEXT_RUN_KEY = "feature-store:extraction:next"
ALL = "*"

# 1: the run covers the wanted features; 2: it had not started and now includes them;
# 0: it started without them; -1: no record (a run of an older version: every feature).
_JOIN = """
local have = redis.call('HGET', KEYS[1], 'features')
if not have then return -1 end
if have == '*' then return 1 end
local wanted = ARGV[1]
local set = {}
for f in string.gmatch(have, '[^,]+') do set[f] = true end
if wanted ~= '*' then
  local missing = false
  for f in string.gmatch(wanted, '[^,]+') do
    if not set[f] then missing = true end
  end
  if not missing then return 1 end
end
if redis.call('HGET', KEYS[1], 'sealed') == '1' then return 0 end
if wanted == '*' then
  redis.call('HSET', KEYS[1], 'features', '*')
else
  for f in string.gmatch(wanted, '[^,]+') do set[f] = true end
  local merged = {}
  for f in pairs(set) do table.insert(merged, f) end
  table.sort(merged)
  redis.call('HSET', KEYS[1], 'features', table.concat(merged, ','))
end
return 2
"""

_SEAL = """
redis.call('HSET', KEYS[1], 'sealed', '1')
return redis.call('HGET', KEYS[1], 'features')
"""

# The current run ended: the next one (if any) becomes current (its id returned), else the
# slot is freed.
_PROMOTE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local waiting = redis.call('GET', KEYS[2])
if waiting then
  redis.call('SET', KEYS[1], waiting, 'EX', ARGV[2])
  redis.call('DEL', KEYS[2])
  return waiting
end
redis.call('DEL', KEYS[1])
return false
"""

# A run waits behind `after` only while `after` is still the current run and no run waits yet
# (else the run it would wait for may have ended already: two runs would refresh at once).
_CLAIM_NEXT = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return 1
"""

# Claim the enqueueing of a promoted run: 1 when this caller should enqueue it.
_CLAIM_ENQUEUE = """
local claimed = tonumber(redis.call('HGET', KEYS[1], 'enqueued') or '0')
if claimed == 0 or tonumber(ARGV[1]) - claimed > tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'enqueued', ARGV[1])
  return 1
end
return 0
"""

_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def record_key(job_id: str) -> str:
    return f"feature-store:run:{job_id}:features"


def encode_features(feature_types: list[str] | None) -> str:
    return ALL if feature_types is None else ",".join(sorted(set(feature_types)))


def decode_features(stored: bytes | str | None) -> list[str] | None:
    """The feature types a run refreshes; None means every feature (also for a run without a
    record: one of an older version)."""
    if stored is None:
        return None
    text = stored.decode() if isinstance(stored, bytes) else stored
    return None if text == ALL else [f for f in text.split(",") if f]


class RunSlots:
    def __init__(self, connection: redis.Redis, ttl: int) -> None:
        self.redis = connection
        self.ttl = ttl
        self._join = connection.register_script(_JOIN)
        self._seal = connection.register_script(_SEAL)
        self._promote = connection.register_script(_PROMOTE)
        self._claim_next = connection.register_script(_CLAIM_NEXT)
        self._claim_enqueue = connection.register_script(_CLAIM_ENQUEUE)
        self._release = connection.register_script(_RELEASE_IF_OWNER)

    def create_record(self, job_id: str, feature_types: list[str] | None) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(record_key(job_id), "features", encode_features(feature_types))
            pipe.expire(record_key(job_id), self.ttl)
            pipe.execute()

    def join(self, job_id: str, feature_types: list[str] | None) -> bool:
        """Whether the run `job_id` will refresh `feature_types` (growing it if it has not started)."""
        return int(self._join(keys=[record_key(job_id)], args=[encode_features(feature_types)])) != 0

    def seal(self, job_id: str) -> list[str] | None:
        """The run starts: its features are fixed from now on, and returned (None: every feature)."""
        return decode_features(self._seal(keys=[record_key(job_id)]))

    def features(self, job_ids: list[str]) -> list[list[str] | None]:
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(record_key(job_id), "features")
            return [decode_features(stored) for stored in pipe.execute()]

    def current(self) -> str | None:
        return _text(self.redis.get(CURRENT_RUN_KEY))

    def waiting(self) -> str | None:
        return _text(self.redis.get(NEXT_RUN_KEY))

    def claim_current(self, job_id: str) -> bool:
        return bool(self.redis.set(CURRENT_RUN_KEY, job_id, nx=True, ex=self.ttl))

    def claim_next(self, job_id: str, after: str) -> bool:
        """Make `job_id` the run waiting behind `after`, if `after` is still current and none waits."""
        return bool(self._claim_next(keys=[CURRENT_RUN_KEY, NEXT_RUN_KEY], args=[job_id, after, self.ttl]))

    def promote(self, ended: str) -> str | None:
        """Run `ended` is over: the run waiting behind it becomes current (its id is returned, for
        the caller to enqueue), or the slot is freed."""
        return _text(self._promote(keys=[CURRENT_RUN_KEY, NEXT_RUN_KEY], args=[ended, self.ttl]))

    def claim_enqueue(self, job_id: str, now: float, grace: float) -> bool:
        """Whether this caller is the one to enqueue promoted run `job_id`."""
        return bool(self._claim_enqueue(keys=[record_key(job_id)], args=[int(now), int(grace)]))

    def release(self, job_id: str) -> None:
        """Free whichever slot still names `job_id` (a run that will never start)."""
        self.promote(job_id)
        self._release(keys=[NEXT_RUN_KEY], args=[job_id])


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None
