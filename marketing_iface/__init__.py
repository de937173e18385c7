"""The one door to the utility's marketing (billing) system.

``interface`` is the contract (account look-up, posting a recharge exactly
once, reading a day's postings); ``sql`` implements it against the marketing
database's interface table (accounts are only read), ``null`` in memory;
``standin`` creates a stand-in marketing database for the embedded default,
the demo and the tests; ``outbox`` posts committed recharges until the
marketing system acknowledges them; ``reconcile`` compares a business day on
both sides.  Nothing else in the project touches the marketing database.
"""
