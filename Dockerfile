# xstream server, listening on all interfaces on port 7070 (TCP) and 7080 (HTTP, tus).
# Redis: embedded (a child redis-server keeping its append-only file in /data/redis),
# unless XSTREAM_REDIS_URL is set, e.g. -e XSTREAM_REDIS_URL=redis://redis:6379/0
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY xstream_server ./xstream_server
COPY handlers ./handlers
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 xstream \
    && mkdir /data && chown xstream /data
USER xstream
ENV XSTREAM_HOST=0.0.0.0 \
    XSTREAM_PORT=7070 \
    XSTREAM_HTTP_HOST=0.0.0.0 \
    XSTREAM_HTTP_PORT=7080 \
    XSTREAM_DATA_DIR=/data
VOLUME /data
EXPOSE 7070 7080
STOPSIGNAL SIGTERM
CMD ["xstream-server"]
