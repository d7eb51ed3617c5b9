# syntax=docker/dockerfile:1
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/var/lib/kuda

RUN groupadd --system kuda \
 && useradd --system --gid kuda --home-dir /var/lib/kuda --create-home --shell /usr/sbin/nologin kuda

# EXTRAS=otel adds OpenTelemetry export (OTEL_TRACING=true); empty for the plain image.
ARG EXTRAS=""
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
 && rm -rf build *.egg-info

USER kuda
# 8000: the API and /ws; 9100: /metrics when METRICS_PORT=9100 (kept off the public listener).
EXPOSE 8000 9100

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]

CMD ["kuda", "serve", "--host", "0.0.0.0", "--port", "8000"]
