#!/bin/bash
# The official tensorflow/serving image's entrypoint, with the simulator in place of
# tensorflow_model_server: gRPC on 8500, REST on 8501, single-model mode from MODEL_NAME and
# MODEL_BASE_PATH, then the container's arguments (which win: with --model_config_file the
# server ignores --model_name/--model_base_path). `exec` so that tini signals the server itself.
exec tfs-sim --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
