"""The one door to the utility's marketing (billing) system.

The contract (account look-up, posting a recharge or a reversal exactly
once, reading a day's postings) is ``cardmgmt.marketing``; ``sql``
implements it against the marketing database's interface table (accounts
are only read), laid out as a mapping file says (``mapping``), ``null`` in memory;
``standin`` creates a stand-in marketing database for the embedded default,
the demo and the tests; ``outbox`` posts committed recharges until the
marketing system acknowledges them; ``sms`` queues and hands over the SMS
notices of acknowledged postings; ``reconcile`` compares a business day on
both sides.  Nothing else in the project touches the marketing database.
"""
