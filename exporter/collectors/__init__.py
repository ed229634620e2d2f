"""Prometheus collectors: each yields metric families from a snapshot at scrape time."""
