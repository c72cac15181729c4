#!/usr/bin/env bash
# Regenerates the Python modules from the .proto files (needs the dev extra: grpcio-tools).
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
  reconciler/proto/error_codes.proto reconciler/proto/tensorflow_core.proto \
  reconciler/proto/tensorflow_serving.proto
