# syntax=docker/dockerfile:1
#
#   docker build -t voltpay .
#   docker run --stop-timeout 30 -p 8080:8080 -v voltpay-data:/var/lib/voltpay voltpay
#
# --stop-timeout: the daemon drains for up to 25 s after SIGTERM, and docker's
# default of 10 s would kill it mid-drain (compose: stop_grace_period: 30s).
#
# The event bus: by default the embedded one, a private SNS/SQS endpoint in a
# child process of the daemon, inside the container, answering only requests
# signed with a key pair made at every start; its events live in memory (the
# daemon publishes again at start what it never consumed). For AWS:
#   docker run ... -e VOLTPAY_AWS__EMBEDDED=false -e VOLTPAY_AWS__REGION=eu-west-1 \
#     -e VOLTPAY_AWS__TOPIC_ARN=... -e VOLTPAY_AWS__QUEUE_URL=... \
#     -e VOLTPAY_AWS__DEAD_LETTER_QUEUE_URL=...   (keys: an instance role, or
#     VOLTPAY_AWS__ACCESS_KEY_ID and VOLTPAY_AWS__SECRET_ACCESS_KEY)
# For LocalStack: -e VOLTPAY_AWS__ENDPOINT_URL=http://localstack:4566
# (`voltpay aws bootstrap` creates the topic and queues and prints the settings).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The venv lives where the final stage runs it: a venv is not relocatable.
RUN python -m venv /opt/voltpay/.venv
COPY . .
# Wheels first, then an offline install from them: what runs is exactly what
# was built, and no source tree, test or build tool reaches the final image.
RUN /opt/voltpay/.venv/bin/pip wheel --wheel-dir /wheels . \
    && /opt/voltpay/.venv/bin/pip install --no-index --find-links /wheels voltpay

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 voltpay \
    && useradd --system --uid 10001 --gid voltpay --no-create-home \
       --home-dir /var/lib/voltpay --shell /usr/sbin/nologin voltpay \
    && install -d -o voltpay -g voltpay -m 0750 /var/lib/voltpay
COPY --from=builder /opt/voltpay/.venv /opt/voltpay/.venv
ENV PATH=/opt/voltpay/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VOLTPAY_HTTP__HOST=0.0.0.0 \
    VOLTPAY_OPS__HOST=0.0.0.0 \
    VOLTPAY_OPS__PORT=9090 \
    VOLTPAY_DATABASE__URL=sqlite:///var/lib/voltpay/voltpay.sqlite3
WORKDIR /var/lib/voltpay
VOLUME ["/var/lib/voltpay"]
# Numeric, so orchestrators that enforce runAsNonRoot can verify it.
USER 10001:10001
# 8080: the API. 9090: /metrics and /api/agents (the operations listener),
# for the monitoring network only: publish it to nobody else.
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
# No curl in the slim image; python is there anyway. Follows the default port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
CMD ["python", "-m", "voltpay", "run"]
