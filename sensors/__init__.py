"""Automation of the domains: sensors, schedules and the jobs they target, one module per domain
(``sensors/lending.py``). Each domain registers its own (``assets/lending/domain.py``) with its freshness deadlines;
the platform's own automation (alerts, freshness checks, maintenance) is added by ``batch_platform.domain``."""
