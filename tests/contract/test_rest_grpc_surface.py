"""TFS's REST and gRPC surface beyond reference section 9, each test naming the TFS file and
function it follows (http_rest_api_handler.cc, http_rest_api_util.cc, http_server.cc,
json_tensor.cc, prediction_service_impl.cc, predict_util.cc, get_model_metadata_impl.cc,
classifier.cc, multi_inference.cc)."""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlsplit

import grpc
import pytest
import requests
from google.protobuf import wrappers_pb2

from reconciler.proto import tensorflow_core_pb2 as tf_pb
from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.proto import tensorflow_serving_pb2_grpc as pb_grpc

from .tfs_contract import DOG, StartTfs, Tfs, model_config, server_config

pytestmark = [pytest.mark.contract, pytest.mark.integration]


@pytest.fixture
def tfs(start_tfs: StartTfs) -> Tfs:
    return start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), specific=[1, 2])
        ),
        models={"a": [1, 2]},
    )


def error_of(response: requests.Response) -> str:
    body: str = response.json()["error"]
    return body


def test_predict_body_is_parsed_before_the_model_is_looked_up(tfs: Tfs) -> None:
    """http_rest_api_handler.cc ProcessPredictRequest: FillPredictRequestFromJson parses the
    body before GetInfoMap asks for the servable; ProcessClassifyRequest checks 'examples'
    before the servable too."""
    response = tfs.post("/v1/models/no_such_model:predict", body=["not", "an", "object"])
    assert response.status_code == 400
    assert error_of(response) == 'JSON Value: ["not", "an", "object"] Is not object'
    response = tfs.post("/v1/models/no_such_model:classify", body={})
    assert response.status_code == 400
    assert error_of(response) == (
        "JSON Value: {} When method is classify, key 'examples' is expected and was not found"
    )
    response = tfs.post("/v1/models/no_such_model:predict")
    assert response.status_code == 404


def test_classify_reads_the_context_before_the_examples(tfs: Tfs) -> None:
    """json_tensor.cc FillClassifyRegressRequestFromJson: an optional 'context' is made an
    Example (MakeExampleFromJsonObject) before 'examples' is looked at."""
    for method in ("classify", "regress"):
        response = tfs.post(f"/v1/models/no_such_model:{method}", body={"context": [1]})
        assert response.status_code == 400
        assert error_of(response) == "Example must be JSON object but got JSON Array"


def test_predict_input_is_checked_against_the_signature(tfs: Tfs) -> None:
    """json_tensor.cc: named inputs, dtypes, equal shapes, empty instances, both keys."""
    a = tfs.name("a")
    image = DOG["instances"][0]
    cases = {
        '{"instances": []}': 'JSON Value: {\n    "instances": []\n} '
        "No values in 'instances' array",
        '{"instances": [{"nope": 1}]}': "Failed to process element: 0 key: nope of 'instances' "
        "list. Error: INVALID_ARGUMENT: JSON object: does not have named input: nope",
        '{"inputs": {"nope": 1}}': "Missing named input: input_image in 'inputs' object.",
    }
    for body, message in cases.items():
        response = requests.post(f"{tfs.rest_url}/v1/models/{a}:predict", data=body, timeout=10)
        assert response.status_code == 400, body
        assert error_of(response) == message, body
    both = tfs.post(f"/v1/models/{a}:predict", body={"instances": [image], "inputs": [image]})
    assert both.status_code == 400
    assert error_of(both).endswith(
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
    )
    typed = tfs.post(f"/v1/models/{a}:predict", body={"instances": ["x"]})
    assert typed.status_code == 400
    assert "is not of expected type: float" in error_of(typed)
    sizes = tfs.post(f"/v1/models/{a}:predict", body={"instances": [image, image[0]]})
    assert sizes.status_code == 400
    assert "Expecting tensor size: 192 but got: 24" in error_of(sizes)


def test_url_matching_decoding_and_methods(tfs: Tfs) -> None:
    """http_rest_api_util.cc ParseModelInfo (case-insensitive patterns, the model name
    unescaped), http_rest_api_handler.cc ProcessRequest ("Malformed request: ..."; the verb and
    "metadata" compared in lower case), http_server.cc (paths outside /v1/ get 404)."""
    a = tfs.name("a")
    assert tfs.get(f"/V1/MODELS/{a}").status_code == 200
    encoded = "".join(f"%{ord(c):02X}" for c in a)
    assert tfs.get(f"/v1/models/{encoded}").status_code == 200
    upper = tfs.post(f"/v1/models/{a}:PREDICT")
    assert upper.status_code == 400
    assert error_of(upper) == f"Malformed request: POST /v1/models/{a}:PREDICT"
    put = requests.put(f"{tfs.rest_url}/v1/models/{a}", timeout=10)
    assert put.status_code == 400
    assert error_of(put) == f"Malformed request: PUT /v1/models/{a}"
    assert tfs.get("/v1/models").status_code == 400
    assert error_of(tfs.get("/v1/models")) == "Missing model name in request."
    assert tfs.get("/v2/models").status_code == 404
    big = tfs.get(f"/v1/models/{a}/versions/99999999999999999999")
    assert big.status_code == 400 and big.text == ""


def test_classify_on_a_predict_only_model(tfs: Tfs) -> None:
    """classifier.cc PreProcessClassification (with --enable_signature_method_name_check off,
    TFS's default): the lab's predict signature has no 'inputs' input."""
    a = tfs.name("a")
    response = tfs.post(f"/v1/models/{a}:classify", body={"examples": [{"x": 1}]})
    assert response.status_code == 400
    assert error_of(response).startswith("No classification inputs found in SignatureDef: ")


def test_regress_on_a_predict_only_model(tfs: Tfs) -> None:
    """regressor.cc GetRegressionSignatureDef / PreProcessRegression (method name check off,
    TFS's default): one input and one output, but no 'inputs' input. Over REST the body is
    read by json_tensor.cc FillClassifyRegressRequestFromJson, whose missing-'examples' text
    names classify for regress too."""
    a = tfs.name("a")
    response = tfs.post(f"/v1/models/{a}:regress", body={"examples": [{"x": 1}]})
    assert response.status_code == 400
    assert error_of(response).startswith("No regression inputs found in SignatureDef: ")
    response = tfs.post(f"/v1/models/{a}:regress", body={})
    assert response.status_code == 400
    assert error_of(response) == (
        "JSON Value: {} When method is classify, key 'examples' is expected and was not found"
    )
    with pytest.raises(grpc.RpcError) as error:
        stub(tfs).Regress(pb.RegressionRequest(model_spec=pb.ModelSpec(name=a)), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("No regression inputs found in SignatureDef: ")


def stub(tfs: Tfs) -> pb_grpc.PredictionServiceStub:
    channel = grpc.insecure_channel(tfs.grpc_target)
    return pb_grpc.PredictionServiceStub(channel)  # type: ignore[no-untyped-call]


def image_tensor() -> tf_pb.TensorProto:
    image = DOG["instances"][0]
    tensor = tf_pb.TensorProto(dtype=tf_pb.DT_FLOAT)
    for size in (1, 8, 8, 3):
        tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.extend(v for row in image for pixel in row for v in pixel)
    return tensor


def test_grpc_predict_and_metadata(tfs: Tfs) -> None:
    """prediction_service_impl.cc Predict (predict_util.cc RunPredict) and GetModelMetadata
    (get_model_metadata_impl.cc)."""
    a = tfs.name("a")
    service = stub(tfs)
    request = pb.PredictRequest(model_spec=pb.ModelSpec(name=a))
    request.inputs["input_image"].CopyFrom(image_tensor())
    response = service.Predict(request, timeout=10)
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs["softmax"].tensor_shape.dim) == [
        tf_pb.TensorShapeProto.Dim(size=1),
        tf_pb.TensorShapeProto.Dim(size=3),
    ]
    pinned = pb.PredictRequest(
        model_spec=pb.ModelSpec(name=a, version=wrappers_pb2.Int64Value(value=1))
    )
    pinned.inputs["input_image"].CopyFrom(image_tensor())
    assert service.Predict(pinned, timeout=10).model_spec.version.value == 1
    metadata = service.GetModelMetadata(
        pb.GetModelMetadataRequest(
            model_spec=pb.ModelSpec(name=a), metadata_field=["signature_def"]
        ),
        timeout=10,
    )
    signatures = pb.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    assert "input_image" in signatures.signature_def["serving_default"].inputs


def test_grpc_errors(tfs: Tfs) -> None:
    """A missing model is NOT_FOUND "Servable not found ..." (basic_manager.cc); a missing
    signature FAILED_PRECONDITION (predict_util.cc); no metadata_field INVALID_ARGUMENT
    (get_model_metadata_impl.cc); Classify on a predict signature (classifier.cc); an unknown
    MultiInference method (multi_inference.cc)."""
    a = tfs.name("a")
    service = stub(tfs)

    def code_and_details(call: object, request: object) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as error:
            call(request, timeout=10)  # type: ignore[operator]
        return error.value.code(), error.value.details() or ""

    code, details = code_and_details(
        service.Predict, pb.PredictRequest(model_spec=pb.ModelSpec(name="no_such_model"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "Servable" in details
    code, details = code_and_details(
        service.Predict,
        pb.PredictRequest(model_spec=pb.ModelSpec(name=a, signature_name="nope")),
    )
    assert (code, details) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    )
    code, details = code_and_details(
        service.GetModelMetadata, pb.GetModelMetadataRequest(model_spec=pb.ModelSpec(name=a))
    )
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    code, details = code_and_details(
        service.Classify, pb.ClassificationRequest(model_spec=pb.ModelSpec(name=a))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("No classification inputs found in SignatureDef: ")
    task = pb.InferenceTask(
        model_spec=pb.ModelSpec(name=a), method_name="tensorflow/serving/predict"
    )
    code, details = code_and_details(service.MultiInference, pb.MultiInferenceRequest(tasks=[task]))
    assert (code, details) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict",
    )


def test_the_rest_port_listens_with_libevents_backlog(tfs: Tfs) -> None:
    """evhttp_server.cc binds with evhttp_bind_socket_with_handle, which calls listen(fd, 128)
    (libevent http.c): a client opening many connections at once is not held back a second
    (a dropped SYN sent again) the way a backlog of 5 holds it. `ss` shows a listening
    socket's backlog as its Send-Q."""
    port = urlsplit(tfs.rest_url).port
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read the listening socket's backlog")
    shown = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    if not shown:
        pytest.skip(f"TFS's REST port {port} does not listen on this host")
    assert shown[2] == "128", shown
