"""``promptreg server``: the registry as an HTTP service (FastAPI, versioned REST API under /api/v1/).

Layering: this package sits beside ``cli`` above ``services``; it wraps the typed ``promptreg.Registry``
facade and nothing below ``server`` imports it. ``policy`` (who may do what) is pure; ``tokens`` and
``oidc`` establish identity; ``app`` builds the application.
"""
