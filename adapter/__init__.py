"""The Kubernetes external (and custom) metrics API server."""
