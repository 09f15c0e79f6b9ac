"""Domain assets, one package or module per domain. Each domain registers itself with a ``Domain``
(``assets/lending/domain.py``); the composition root (``definitions.py``) lists the domains."""
