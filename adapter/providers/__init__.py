"""Metric providers: they answer "what is the value" and nothing of the API around it.

:mod:`adapter.providers.interface` is what the API server (:mod:`adapter.apiserver`) asks of them; each
other module here is one provider or a part of one: the brokers (``brokers``), PromQL-backed external
metrics (``promql``) and custom metrics from Prometheus (``custom``, with ``rules``, ``prometheus``, ``pods``).
"""
