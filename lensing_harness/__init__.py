"""The demo and test harness: never imported by the shipped exporter, adapter, sources or core."""
