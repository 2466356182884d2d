# NGC PyTorch image: keeps its torch, CUDA, NCCL and apex; adds this project's packages.
ARG FROM_IMAGE_NAME=nvcr.io/nvidia/pytorch:24.10-py3
FROM ${FROM_IMAGE_NAME}

WORKDIR /workspace/lm-recipes
# The same set-up script CI runs (make setup): it keeps the image's torch and installs
# requirements.txt (no torch in it) with the data tools (sacremoses, subword-nmt, nltk, h5py).
COPY requirements.txt ./
COPY scripts/setup.sh scripts/
RUN PIP_NO_CACHE_DIR=1 bash scripts/setup.sh runtime

COPY . .
ENV PYTHONPATH=/workspace/lm-recipes
