"""The gateway's response cache, and `devloop cache` to look into it.

    key.py      what makes two requests the same request; which ones may be cached
    lru.py      the in-process tier: a true LRU bounded by entries and bytes
    store.py    ResponseCache: the local tier, then Redis, which may fail without harm
    command.py  `devloop cache stats|get|flush|bench`
    bench.py    `devloop cache bench`: gateway hits and misses against the engine and Redis
    loadgen.py  its load generators and probes (wrk, aiohttp, redis-benchmark, CPU time)
"""
