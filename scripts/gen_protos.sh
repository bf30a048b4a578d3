#!/usr/bin/env bash
# Regenerates the Python stubs from protos/. The output mirrors the proto
# package (pipeserve.v1 -> src/pipeserve/v1/) so the generated imports work
# unchanged. tests/unit/test_protos.py fails when the committed stubs are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iprotos \
  --python_out=src --pyi_out=src --grpc_python_out=src \
  protos/pipeserve/v1/pipeserve.proto
# The Open Inference Protocol (package inference), vendored verbatim from Triton's
# common repository (protos/inference/README.md). Compiled under the file names
# Triton compiles them under, so protobuf's one descriptor pool holds them once
# even beside tritonclient's copy of the same files; their imports of each other
# are then made package-relative to src/pipeserve/oip/.
python -m grpc_tools.protoc -Iprotos/inference \
  --python_out=src/pipeserve/oip --pyi_out=src/pipeserve/oip \
  protos/inference/grpc_service.proto protos/inference/model_config.proto
python -m grpc_tools.protoc -Iprotos/inference --grpc_python_out=src/pipeserve/oip \
  protos/inference/grpc_service.proto
sed -i -E 's/^import (\w+_pb2) as/from pipeserve.oip import \1 as/' \
  src/pipeserve/oip/grpc_service_pb2.py src/pipeserve/oip/grpc_service_pb2.pyi \
  src/pipeserve/oip/grpc_service_pb2_grpc.py
