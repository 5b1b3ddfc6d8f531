"""Fees: the tariff, the durable per-check ledger (the meter) and monthly invoices."""
