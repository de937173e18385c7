"""The card domain: batches, PINs, factory files, stock, issuing and the operation log.

Everything a card administrator or finance officer can do lives here as plain
functions over a SQLAlchemy session; `cli.py` and the recharge servers only
translate between the outside world and these rules.  Nothing in this package
imports Twisted, click or pyst2.
"""
