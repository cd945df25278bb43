# CPU worker: ingest, publish and build_dataset (the `cpu` work pool), and Dask workers (infra/dask/).
#   docker build -f infra/docker/cpu.Dockerfile -t ghcr.io/synthmri/factory-cpu:0.1.0 .
#   docker run -e PREFECT_API_URL=http://prefect:4200/api ghcr.io/synthmri/factory-cpu:0.1.0
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false SYNTHMRI_PROJECT_DIR=/opt/synthmri
WORKDIR /opt/synthmri
RUN python -m venv .venv
# torch first, alone and pinned: the CPU build (PyPI's default wheel for Linux is the multi-GB CUDA one)
RUN .venv/bin/pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml constraints.txt README.md ./
COPY schemas ./schemas
COPY synth_core ./synth_core
COPY tasks ./tasks
COPY flows ./flows
COPY infra ./infra
RUN .venv/bin/pip install -c constraints.txt -e . && .venv/bin/pip install -c constraints.txt dask-jobqueue
ENV PATH=/opt/synthmri/.venv/bin:$PATH
USER 1000:1000
CMD ["prefect", "worker", "start", "--pool", "cpu"]
