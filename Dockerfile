# xstream server: TCP on 7070, HTTP (tus, WebSocket, /healthz, /readyz) on 7080, every
# interface; XSTREAM_WORKERS processes on those ports (2 here; set it to the container's
# cores). Data, and the embedded Redis's append-only file when no Redis is given, live in
# the volume /data. With XSTREAM_REDIS_URL (e.g. redis://redis:6379/0) the server uses that
# Redis instead; give it appendonly yes and appendfsync always (docs/OPERATING.md).
#   docker build -t xstream .
#   docker run -p 7070:7070 -p 7080:7080 -v xstream-data:/data xstream
# Two instances and a Redis: compose.yaml.
FROM python:3.11-slim

# redis-server for the embedded Redis (used only without XSTREAM_REDIS_URL).
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY xstream_server ./xstream_server
COPY handlers ./handlers
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 xstream \
    && mkdir /data && chown xstream:xstream /data && chmod 700 /data
USER xstream

ENV PYTHONUNBUFFERED=1 \
    XSTREAM_HOST=0.0.0.0 \
    XSTREAM_PORT=7070 \
    XSTREAM_HTTP_HOST=0.0.0.0 \
    XSTREAM_HTTP_PORT=7080 \
    XSTREAM_DATA_DIR=/data \
    XSTREAM_WORKERS=2
VOLUME /data
EXPOSE 7070 7080

# Ready: Redis answers, the data directory takes an fsynced write and has room, and the
# server is not draining (503, a non-zero exit, otherwise). Python's urllib: no curl here.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('XSTREAM_HTTP_PORT', '7080') + '/readyz', timeout=4)"]

# SIGTERM drains: streams in flight are answered 503 at a checkpoint, then the workers stop.
STOPSIGNAL SIGTERM
CMD ["xstream-server"]
