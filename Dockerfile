# One image for every component: the command chooses `exporter` (default) or `adapter`.
# Runs as a numeric non-root user with a read-only root filesystem (only /tmp needs to be writable,
# an emptyDir in the chart), with tini as PID 1 so SIGTERM reaches the program and zombies are reaped.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lensing_core/ lensing_core/
COPY lensing_sources/ lensing_sources/
COPY lensing_metrics/ lensing_metrics/
COPY exporter/ exporter/
COPY adapter/ adapter/
# the demo and its harness (`python -m lensing_metrics.demo`); the exporter and adapter never import it
COPY lensing_harness/ lensing_harness/
# gpu-pods (grpcio): pod labels on the GPU series from the kubelet's pod-resources socket.
# DL3013: this installs the project itself (with an extra); its dependencies are bounded in pyproject.toml.
# Byte-compile at build time: the running container cannot write next to the sources.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu-pods]" \
    && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
# Debian's tini; package versions follow the base image's security updates, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
# 9808: exporter /metrics; 6443: adapter (HTTPS, behind the APIService)
EXPOSE 9808 6443
ENTRYPOINT ["tini", "--", "lensing-metrics"]
CMD ["exporter"]
