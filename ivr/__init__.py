"""The per-call code: what one phone call needs, copied into Asterisk's sandbox and run by its Python.

``dialog`` is the recharge dialog as a state machine over a small channel
interface; ``agi_channel`` and ``agi_main`` are the thin pyst2 adapter and the
AGI entry point Asterisk runs per call; ``client`` is the failover client for
the server pair and ``protocol`` the request signing it shares with the
servers; ``fields`` the formats of what a caller keys in.  Standard library
only (pyst2 aside), since the sandbox has nothing else; business rules live
in ``cardmgmt`` and the Twisted servers in ``recharge_server``.
"""
