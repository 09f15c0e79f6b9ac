"""The loan domain: a lending simulator, the landing zone, and the loan assets from raw to reporting."""
