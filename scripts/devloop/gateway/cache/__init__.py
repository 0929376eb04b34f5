"""The gateway's response cache, and `devloop cache` to look into it.

    key.py      what makes two requests the same request; which ones may be cached
    control.py  the request's Cache-Control (no-cache, no-store, max-age)
    record.py   a stored entry (a whole answer or a complete stream), rendered in either form
    assemble.py   stream chunks -> the whole answer;  synthesize.py  whole answer -> chunks
    sse.py      Server-Sent Events in and out
    lru.py      the in-process tier: a true LRU bounded by entries and bytes
    store.py    ResponseCache: the local tier, then Redis, which may fail without harm
    command.py  `devloop cache stats|get|flush|bench`
    bench.py    `devloop cache bench`: gateway hits and misses against the engine and Redis
    streambench.py  `devloop cache bench --stream`: live and replayed streams side by side
    loadgen.py  its load generators and probes (wrk, aiohttp, redis-benchmark, CPU time)
"""
