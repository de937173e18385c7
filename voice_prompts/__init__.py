"""The prompt catalogue (Mandarin first, English second) and its rendering for Asterisk.

(Built by the hotline work; empty until then.)
"""
