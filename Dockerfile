# One image for every part of the system; docker-compose.yml picks the part with
# `command: ["fashion-search", "serve", "<target>"]` (no ENTRYPOINT, so that works as is).
FROM python:3.11-slim

# torch is installed first, pinned, from the PyTorch wheel index: an unpinned torch from
# PyPI pulls a multi-GB CUDA build. The default is the small CPU wheel; on GPU nodes build with
#   docker compose build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# (or set TORCH_INDEX_URL in the environment for docker-compose.yml) to get the CUDA wheel.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FS_DATA_DIR=/data \
    FS_BIND_HOST=0.0.0.0

# OpenCV (pulled in by mediapipe and opencv-contrib-python) needs libGL and glib at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# Its own layer, so changing the source does not download torch again.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY . .
# torch==2.13.0 is already satisfied above, so this cannot replace it with another build.
RUN pip install . \
    && python -c "import torch; assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__"

RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /data \
    && chown app:app /data
USER app

EXPOSE 8000 50051 50052 50053 50054
CMD ["fashion-search", "serve", "gateway"]
