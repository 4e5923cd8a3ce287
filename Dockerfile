# rmserve runtime image: ONNX Runtime + gunicorn, no torch, no compilers, non-root.
#
#   docker build -t rmserve .                       # bakes the model repository models/ into /models
#   docker run --rm -p 8000:8000 rmserve
#   docker run --rm -p 8000:8000 -v "$PWD/my-repo:/models:ro" rmserve   # or mount another repository
#
# Every RMSERVE_* setting works as `-e RMSERVE_...`; SIGTERM drains (readyz 503, accepted work
# finishes within RMSERVE_GRACEFUL_TIMEOUT_S), then the server exits.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A venv: Debian's python3 is "externally managed", and the venv copies cleanly into the runtime stage.
RUN python3 -m venv /opt/venv
WORKDIR /src

# Serving dependencies first, from pyproject.toml alone, so code and model changes reuse this layer.
COPY pyproject.toml ./
RUN /opt/venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/venv/bin/pip install -r requirements.txt

# The package itself, non-editable, without the [train]/[dev] extras.
COPY README.md ./
COPY service/ service/
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools


FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RMSERVE_HOST=0.0.0.0 \
    RMSERVE_PORT=8000 \
    RMSERVE_MODEL_REPOSITORY=/models

RUN groupadd --system --gid 10001 rmserve \
    && useradd --system --uid 10001 --gid rmserve --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin rmserve

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Owned by root and read-only to the server; mount another repository at /models to replace it.
COPY models/ /models/

USER 10001:10001
EXPOSE 8000
# /readyz answers 200 once a worker has loaded and warmed the models, 503 while draining; urlopen raises on 503.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('RMSERVE_PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["rmserve"]
CMD ["serve"]
