"""Checkout: pricing, and (coming) turning a cart into held stock and a payment."""
