"""The one door to the utility's marketing (billing) system: account look-up, posting recharges exactly once, reconciliation.

Nothing else in the project may touch the marketing database.  (Built by the recharge-service work; empty until then.)
"""
