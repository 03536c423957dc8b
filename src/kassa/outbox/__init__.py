"""The outbox: work that must happen after a commit, delivered with retries (promise 7)."""
