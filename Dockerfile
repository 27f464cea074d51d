# The updater as a container: `docker run -v /var/run/docker.sock:/var/run/docker.sock ...`
# (README). BASE is any Debian-like image with python3 >= 3.11 and its venv module; the default
# is the official slim Python image, and the tests build it on a local Debian rootfs instead.
# With a wheels/ directory in the build context (`pip wheel -w wheels .`) nothing is downloaded.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY . /src
RUN python3 -m venv /opt/updater \
 && if [ -d /src/wheels ]; then \
      /opt/updater/bin/pip install --no-index --find-links /src/wheels updater; \
    else \
      /opt/updater/bin/pip install /src; \
    fi \
 && /opt/updater/bin/pip uninstall -y pip \
 && find /opt/updater -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/updater/bin/python -m compileall -q /opt/updater/lib

FROM ${BASE}
ARG VERSION=dev
ARG BASE
COPY --from=build /opt/updater /opt/updater
ENV PATH=/opt/updater/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UPDATER_STATE_DIR=/var/lib/updater
# The journal, history and lock: kept across self-updates (the successor gets this volume).
VOLUME /var/lib/updater
LABEL org.opencontainers.image.title="updater" \
      org.opencontainers.image.description="Keeps Docker containers and swarm services on the newest image for their tag" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE}"
# SIGTERM lets an update in flight finish; give the container a stop timeout long enough for
# that (--stop-timeout 120, stop_grace_period: 2m), as the README and stack.yml do.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 CMD ["updater", "health"]
ENTRYPOINT ["updater"]
CMD ["run"]
