# NGC PyTorch image: keeps its torch, CUDA, NCCL and apex; adds this project's packages.
ARG FROM_IMAGE_NAME=nvcr.io/nvidia/pytorch:24.10-py3
FROM ${FROM_IMAGE_NAME}

WORKDIR /workspace/lm-recipes
# requirements.txt lists no torch, so the image's build stays in place.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
ENV PYTHONPATH=/workspace/lm-recipes
