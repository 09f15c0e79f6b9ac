"""The loan domain: a point-of-sale lending world simulated into a landing zone, and the assets that ingest it.

``simulator`` is the entry point (``simulate``, ``write_correction``, ``main``); ``world`` holds the behaviour
model, ``schedule`` the calendar and amortization arithmetic, and ``landing`` the drop layout and manifests.
"""
