"""Event delivery from the transactional outbox (promptreg.registry.outbox): the worker, the MLflow
mirror consumer, webhooks with Standard Webhooks signatures. docs/events.md is the user's guide.

Modules: policy (pure rules: types, subscriptions, backoff), config (settings), signing (signatures,
secrets at rest), http (address checks, the POST), mirror (the MLflow consumer), worker (rounds,
leases, the background thread for long-lived processes), webhooks and outbox (the CLI's verbs),
views (what the verbs return).
"""
