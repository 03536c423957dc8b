"""Orders: created by a paid checkout; status machine, cancellation, refunds and returns."""
