#!/usr/bin/env bash
# Regenerates the Python stubs from protos/. The output mirrors the proto
# package (pipeserve.v1 -> src/pipeserve/v1/) so the generated imports work
# unchanged. tests/test_protos.py fails when the committed stubs are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iprotos \
  --python_out=src --pyi_out=src --grpc_python_out=src \
  protos/pipeserve/v1/pipeserve.proto
