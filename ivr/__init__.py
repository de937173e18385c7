"""The phone side.

``dialog`` is the recharge dialog as a state machine over a small channel
interface; ``agi_channel`` and ``agi_main`` are the thin pyst2 adapter and the
AGI entry point Asterisk runs per call; ``client`` is the failover client for
the server pair and ``protocol`` the request signing both share (standard
library only, as they run inside the AGI process); ``server`` holds the
Twisted recharge servers; ``callscript`` and ``replay`` are the testers'
call-script tooling.  Business rules live in ``cardmgmt``, not here.
"""
