"""Sender authentication as the RFCs define it: SPF, DKIM, DMARC and ARC evaluation.

No findings here: the engines in :mod:`scanner.engines` (``spf``, ``dkim``, ``dmarc``, ``arc``)
are thin adapters over these modules, and :mod:`scanner.mailauth.context` shares one message's
results between them.
"""
