# The `web` image: the Flask + flask-restx gateway under gunicorn. Built by docker-compose.yaml
# (`docker compose build web`); the build context is the repository root, trimmed by
# .dockerignore to requirements/web.txt, web/ and templates/.
#
# No TensorFlow runtime in here. The gateway needs only TF Serving's protobuf messages and gRPC
# stubs (PredictRequest, GetModelMetadata, GetModelStatus). The `tensorflow-serving-api` wheel
# would pull in the whole `tensorflow` wheel (~600 MB) just to import those, so the generated
# *_pb2 modules are vendored into web/serving/protos by tools/vendor_serving_protos.py (`make protos`),
# with their imports rewritten to stay inside web.serving.protos. They are byte-for-byte TF Serving's
# descriptors, so `protobuf` + `grpcio` from requirements/web.txt are all the runtime needs.
#
# Single stage on purpose: every package in requirements/web.txt (pycocotools included) ships a
# manylinux wheel for CPython 3.11 on x86_64, so nothing is compiled and no build tools end up in
# the image. --only-binary=:all: makes a missing wheel fail the build instead of quietly pulling
# in a compiler-dependent source build.

FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes do not invalidate this layer.
COPY requirements/web.txt requirements/web.txt
RUN pip install --only-binary=:all: -r requirements/web.txt

# A non-root user owns only the two folders the gateway writes; the code stays root-owned and
# read-only for it. Named volumes mounted on these folders inherit their ownership.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app \
    && mkdir -p upload_folder output jobs \
    && chown app:app upload_folder output jobs

COPY web/ web/
COPY templates/ templates/
COPY gunicorn.conf.py gunicorn.conf.py

# The gateway's settings (web/settings.py) come from the environment; docker-compose.yaml sets
# the ones that differ in the stack. These are the defaults for a bare `docker run`.
ENV TF_SERVING_ADDRESS=tf_server:8500 \
    MODEL_CONFIG_FILE=/tf_server/models.docker.config \
    MODELS_DIR=/tf_server/models \
    UPLOAD_FOLDER=/app/upload_folder \
    OUTPUT_FOLDER=/app/output \
    JOBS_FOLDER=/app/jobs \
    WEB_CONCURRENCY=4 \
    GUNICORN_CMD_ARGS="--bind=0.0.0.0:5000 --threads=4 --timeout=60 --graceful-timeout=30 --worker-tmp-dir=/dev/shm --access-logfile=- --no-control-socket" \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus

USER app
EXPOSE 5000

# Worker processes: WEB_CONCURRENCY (gunicorn reads it); every other gunicorn option can be
# changed through GUNICORN_CMD_ARGS. --no-control-socket: gunicorn's control socket would go under
# $HOME, which the non-root user (and a read-only root filesystem on Kubernetes) does not have. No --preload: each worker opens its own gRPC channel after
# the fork. gunicorn.conf.py (read from the working directory) empties PROMETHEUS_MULTIPROC_DIR
# at every start and marks dead workers, so /metrics adds up all workers' numbers. Exec form:
# gunicorn is PID 1 and gets docker's SIGTERM.
CMD ["gunicorn", "web:create_app()"]
