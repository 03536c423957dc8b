"""Payments: providers, the payment and refund records, webhooks and the outbox."""
