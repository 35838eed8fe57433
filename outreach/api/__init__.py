"""HTTP: webhooks, provider callbacks, the ops API and pages."""
