# tfs-reconciler as a container, beside TensorFlow Serving (deploy/compose.yaml).
# Build context: the repository root, with the project's wheel and its
# dependencies in build/wheels/ (built on the host, so the image builds without
# PyPI; build/ is git-ignored):
#   pip wheel --wheel-dir build/wheels .
#   docker build -f deploy/reconciler.Dockerfile -t tfs-reconciler:local .
# The base is the test bed's debootstrapped bookworm with Python 3.11 and tini
# (deploy/tfs-sim/build-base-image.sh). git (for --git) comes from Debian's mirror.
ARG BASE_IMAGE=tfs-reconciler-base:bookworm
FROM ${BASE_IMAGE}

RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY build/wheels/ /tmp/wheels/
RUN python3 -m venv /opt/tfs-reconciler \
 && /opt/tfs-reconciler/bin/pip install --no-cache-dir --no-index --find-links=/tmp/wheels \
      --disable-pip-version-check tfs-reconciler \
 && rm -rf /tmp/wheels \
 && /opt/tfs-reconciler/bin/tfs-reconciler --help >/dev/null

ENV PATH=/opt/tfs-reconciler/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1
# /healthz /readyz /metrics /status
EXPOSE 9109
ENTRYPOINT ["/usr/bin/tini", "--", "tfs-reconciler"]
CMD ["run", "--git"]
