# trainyard: one image for every recipe, on every backend (local docker, HF Jobs, k8s).
#
#   docker build -t ghcr.io/<you>/trainyard:0.1.0 .
#   docker run --gpus all -e HF_TOKEN -e TRAINYARD_SPEC="$(cat runs/m/r/spec.json)" \
#       -v "$PWD/out:/output" ghcr.io/<you>/trainyard:0.1.0 python -m trainyard.run --run-dir /output/r
#
# Backends pass the full command (backends.base.job_command: python -m trainyard.run
# --run-dir /output/<run>), so the image sets CMD, not ENTRYPOINT: a command replaces CMD
# the same way under docker run, HF Jobs and Kubernetes. No secret is baked in: HF_TOKEN
# arrives at run time as the platform's secret.

# The CUDA build of torch comes with the base image and is kept (pip is constrained to it).
ARG BASE_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NLTK_DATA=/opt/nltk_data \
    HOME=/home/trainyard \
    HF_HOME=/home/trainyard/.cache/huggingface \
    TRAINYARD_CACHE=/home/trainyard/.cache/trainyard \
    TRACKIO_DIR=/home/trainyard/.cache/huggingface/trackio

WORKDIR /opt/trainyard
COPY pyproject.toml README.md ./
COPY src ./src

# Constrain pip to the torch already installed, so `.[quant,eval]` never swaps it for a
# different (CPU or other-CUDA) build; then fail the build if CUDA torch is not importable.
RUN python -c "import torch; print(f'torch=={torch.__version__}')" > /tmp/torch-constraint.txt \
    && pip install --no-cache-dir -c /tmp/torch-constraint.txt ".[quant,eval]" \
    && python -c "import torch, trainyard.run; assert torch.version.cuda, 'torch lost its CUDA build'" \
    && rm /tmp/torch-constraint.txt

# IFEval's NLTK data, fetched now so runs need no download at evaluation time.
RUN python -m trainyard.evaluation.provision --nltk-dir /opt/nltk_data

# Unprivileged user (uid 1000; --non-unique: some bases already have one, e.g. ubuntu);
# /output is where job_command puts run directories.
RUN useradd --non-unique --create-home --home-dir /home/trainyard --uid 1000 --shell /bin/bash trainyard \
    && mkdir -p /output "${HF_HOME}" "${TRAINYARD_CACHE}" \
    && chown -R trainyard:trainyard /output /home/trainyard
# numeric, so Kubernetes runAsNonRoot can verify it
USER 1000:1000
WORKDIR /home/trainyard

# With no command: run the spec in $TRAINYARD_SPEC into $TRAINYARD_RUN_DIR (or runs/<matrix>/<run>).
CMD ["python", "-m", "trainyard.run"]
