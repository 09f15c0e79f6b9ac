"""The loan domain: a lending simulator, the landing zone, and the loan assets from raw to reporting.

Registered with the platform by ``assets.lending.domain.lending``; its groups, pools and freshness deadlines are
named after ``DOMAIN`` (``lending_raw``, ``lending_core``, ``lending_reporting``).
"""

DOMAIN = "lending"
