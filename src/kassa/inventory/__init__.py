"""Stock levels, time-limited holds, the stock ledger and the expiry sweeper."""
