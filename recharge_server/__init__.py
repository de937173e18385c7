"""The recharge servers: a pair of Twisted processes in hot standby in front of the recharge core.

``api`` is the HTTP API (documented in ``openapi.yaml`` beside it),
``leadership`` the jobs lease and heartbeats, ``jobs`` the background work
only the leader does, ``metrics`` the Prometheus page and ``service`` the
wiring (``makeService``, ``run``, ``ha_status``).  Business rules stay in
``cardmgmt``: these modules only translate between HTTP and
``cardmgmt.recharge.RechargeService``.  The request signing is shared with
the per-call client in ``ivr.protocol``.
"""

# test-case-name: tests.recharge_server
