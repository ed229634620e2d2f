"""The adapter's API server: the machinery every metrics API group shares (after
kubernetes-sigs/custom-metrics-apiserver's ``pkg/apiserver`` and ``pkg/registry``).

- ``request``: a request's path, ``RequestInfo`` and selectors, parsed once;
- ``status``: every ``metav1.Status`` answer, and provider errors turned into them;
- ``wire``: the JSON written (Go's encoding), discovery documents and the value lists;
- ``groups``: the external.metrics.k8s.io and custom.metrics.k8s.io groups, routing a request to a provider
  (:mod:`adapter.providers.interface`), with the answer cache;
- ``metrics``: the adapter's own request metrics; ``server``: HTTPS, authentication, authorization, routing.
"""
