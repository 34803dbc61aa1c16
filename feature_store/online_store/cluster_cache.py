"""The local cache on a Redis Cluster: one LocalCache per primary node, keys routed by slot.

A node tracks only the reads made on its own connections and invalidates only its own keys
(CLIENT TRACKING is per node), so each primary gets a LocalCache of its own: its own tracking
connections and its own invalidation listener. A read groups its keys by the node that serves
their slot (the cluster client's slot map) and asks each node's cache; the replies are put back in
request order.

When the cluster's layout changes under a read (a slot moved: MOVED or ASK; a node gone), that
node's cache has already dropped everything (LocalCache drops its whole cache on any failed
read); here the slot map is refreshed and the read is answered through the cluster client
itself, uncached. Reads after that route to the new owner, whose cache starts empty.
"""

from __future__ import annotations

import logging
import threading

import redis
from redis.cluster import RedisCluster
from redis.exceptions import AskError, MovedError

from feature_store.online_store.local_cache import LocalCache

log = logging.getLogger(__name__)


class ClusterLocalCache:
    """LocalCache's read() over a cluster (see the module's docstring).

    Args:
        cluster: the store's cluster client (its slot map routes keys; nothing else is sent on it,
            except the uncached read after a layout change).
        fields: the hash fields each read returns.
        **settings: LocalCache's settings for each node's cache (timeouts, size, pings).
    """

    def __init__(self, cluster: RedisCluster, *, fields: tuple[str, ...], **settings) -> None:
        self.cluster = cluster
        self.fields = fields
        self.settings = settings
        self._caches: dict[str, LocalCache] = {}
        self._lock = threading.Lock()
        kwargs = cluster.get_default_node().redis_connection.connection_pool.connection_kwargs
        self._auth = {k: kwargs[k] for k in ("username", "password") if kwargs.get(k)}

    @property
    def hits(self) -> int:
        return sum(cache.hits for cache in list(self._caches.values()))

    @property
    def misses(self) -> int:
        return sum(cache.misses for cache in list(self._caches.values()))

    def _cache(self, node) -> LocalCache:
        with self._lock:
            cache = self._caches.get(node.name)
            if cache is None:
                auth = ":".join(self._auth.get(k, "") for k in ("username", "password"))
                url = f"redis://{auth + '@' if self._auth else ''}{node.host}:{node.port}/0"
                cache = self._caches[node.name] = LocalCache(url, fields=self.fields, **self.settings)
            return cache

    def read(self, keys: list[bytes]) -> list:
        """HMGET `fields` of each key, from each node's cache where valid (see LocalCache.read).
        Raises redis errors as the cluster client would."""
        by_node: dict[str, tuple[object, list[int]]] = {}
        for i, key in enumerate(keys):
            node = self.cluster.get_node_from_key(key)
            by_node.setdefault(node.name, (node, []))[1].append(i)
        results: list = [None] * len(keys)
        for node, positions in by_node.values():
            try:
                replies = self._cache(node).read([keys[i] for i in positions])
            except (MovedError, AskError, redis.ConnectionError, redis.TimeoutError) as exc:
                log.info("cluster layout changed under a cached read (%s): refreshing the slot map", exc)
                self.cluster.nodes_manager.initialize()
                replies = self._uncached([keys[i] for i in positions])
            for i, reply in zip(positions, replies, strict=True):
                results[i] = reply
        return results

    def _uncached(self, keys: list[bytes]) -> list:
        with self.cluster.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, self.fields)
            return pipe.execute()

    def close(self) -> None:
        with self._lock:
            caches, self._caches = list(self._caches.values()), {}
        for cache in caches:
            cache.close()
