# Mediaflow Portal, served by gunicorn as a non-root user. A plain build makes the product (the last
# stage); `--target demo` adds the local Mediaflow emulator for compose's demo profile.
FROM python:3.11.7-slim-bookworm AS portal

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer: code changes do not reinstall them.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

RUN groupadd --gid 10001 portal \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin portal \
    && mkdir -p /app/instance \
    && chown 10001:10001 /app/instance

COPY app.py gunicorn.conf.py ./
COPY portal/ portal/
COPY templates/ templates/
COPY static/ static/

USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

CMD ["gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"]

# The local Mediaflow emulator, for compose's demo profile only (`docker build --target demo`).
FROM portal AS demo
COPY --chown=10001:10001 emulator/ emulator/
EXPOSE 5001
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5001/_emulator/stats', timeout=2)"]
CMD ["python", "-m", "emulator", "--host", "0.0.0.0", "--port", "5001"]

# The last stage is what a plain `docker build .` makes: the product, without its test double.
FROM portal AS production
