# GPU worker: train_gan and generate (the `gpu` work pool). PyPI's torch wheel for Linux bundles the CUDA
# runtime (nvidia-* wheels); the host needs the NVIDIA driver and container toolkit (`docker run --gpus 1`,
# or nvidia.com/gpu in infra/k8s/gpu-base-job-template.json). One worker per GPU: the device is chosen from
# CUDA_VISIBLE_DEVICES when a flow runs, never at import.
#   docker build -f infra/docker/cuda.Dockerfile -t ghcr.io/synthmri/factory-cuda:0.1.0 .
#   docker run --gpus '"device=0"' -e PREFECT_API_URL=http://prefect:4200/api ghcr.io/synthmri/factory-cuda:0.1.0
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false SYNTHMRI_PROJECT_DIR=/opt/synthmri \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /opt/synthmri
RUN python -m venv .venv
RUN .venv/bin/pip install "torch==2.13.0"
COPY pyproject.toml constraints.txt README.md ./
COPY schemas ./schemas
COPY synth_core ./synth_core
COPY tasks ./tasks
COPY flows ./flows
COPY infra ./infra
RUN .venv/bin/pip install -c constraints.txt -e .
ENV PATH=/opt/synthmri/.venv/bin:$PATH
USER 1000:1000
CMD ["prefect", "worker", "start", "--pool", "gpu"]
