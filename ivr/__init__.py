"""The phone side: the recharge dialog, the AGI entry script, the failover client and the Twisted recharge servers.

(Built by the recharge-service and hotline work; empty until then.)
"""
