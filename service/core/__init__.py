"""Bottom room shared by all others: settings, wire models, metrics, idempotency, prompts, backend types; imports no other room."""
