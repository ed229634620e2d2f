"""The shared core: options, logging, background threads, the metric catalog, the broker readers and poller."""
