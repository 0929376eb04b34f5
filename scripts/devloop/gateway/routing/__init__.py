"""Where a request goes: which engines serve its model, and which replica of them.

    discovery.py   the upstream list (flags, UPSTREAM_URLS), a Service's replicas from DNS, and an
                   engine's /v1/models listing
    endpoints.py   one replica's state (models, ready/down/gone, requests outstanding, its HTTP
                   client) and the pool of them, with a wait for "a replica of this model is ready"
    policies.py    the choices, each a plain function of (endpoints, request facts): least
                   outstanding, round robin, and the affinity key (session header / `user`, or the
                   conversation's first turn / the prompt's prefix) with its bounded table
    health.py      the background refresh: DNS, each replica's /health and /v1/models
    router.py      the pool + a policy behind one `pick()`, the unknown-model 404, the bounded wait
                   for a ready replica, and which failures are safe to retry elsewhere

The proxy (devloop.gateway.proxy) asks the router for a replica, sends, and asks again when the
answer says the replica is going away and nothing reached the client yet.
"""
