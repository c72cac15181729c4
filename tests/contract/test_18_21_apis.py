"""Reference section 9, items 18-21: the REST and gRPC APIs."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from reconciler.proto import tensorflow_serving_pb2 as pb

from .tfs_contract import DOG, StartTfs, Tfs, model_config, server_config

pytestmark = [pytest.mark.contract, pytest.mark.integration]

OK_STATUS = {"error_code": "OK", "error_message": ""}


@pytest.fixture
def lab(start_tfs: StartTfs) -> Tfs:
    """The lab: versions 1, 2, 3 all served, deprecated=1 stable=2 canary=3."""
    return start_tfs(
        lambda t: server_config(
            model_config(
                t.name("animals"),
                t.base_path(t.name("animals")),
                specific=[1, 2, 3],
                labels={"deprecated": 1, "stable": 2, "canary": 3},
            )
        ),
        models={"animals": [1, 2, 3]},
    )


def json_of(tfs: Tfs, path: str) -> Any:
    response = tfs.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def test_18_rest_status_metadata_predict_by_name_version_label(lab: Tfs) -> None:
    m = lab.name("animals")
    everything = {
        "model_version_status": [
            {"version": str(v), "state": "AVAILABLE", "status": OK_STATUS} for v in (3, 2, 1)
        ]
    }

    def sorted_status(body: Any) -> Any:
        return sorted(body["model_version_status"], key=lambda s: s["version"], reverse=True)

    # Status: by name and by label list every version (a label is ignored); a version narrows.
    assert sorted_status(json_of(lab, f"/v1/models/{m}")) == everything["model_version_status"]
    by_label = json_of(lab, f"/v1/models/{m}/labels/stable")
    assert sorted_status(by_label) == everything["model_version_status"]
    assert json_of(lab, f"/v1/models/{m}/versions/2") == {
        "model_version_status": [{"version": "2", "state": "AVAILABLE", "status": OK_STATUS}]
    }
    # Metadata: model_spec.version is the resolved version.
    for suffix, version in (("", "3"), ("/versions/1", "1"), ("/labels/stable", "2")):
        body = json_of(lab, f"/v1/models/{m}{suffix}/metadata")
        assert body["model_spec"] == {"name": m, "signature_name": "", "version": version}
        signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert set(signature["inputs"]) == {"input_image"}
        assert signature["outputs"]["softmax"]["dtype"] == "DT_FLOAT"
        assert signature["method_name"] == "tensorflow/serving/predict"
    # Predict: row format answers one softmax over 3 classes per instance, by each URL form.
    answers = {}
    for suffix in ("", "/versions/1", "/versions/2", "/labels/stable", "/labels/canary"):
        response = lab.post(f"/v1/models/{m}{suffix}:predict")
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert len(predictions) == len(DOG["instances"])
        assert len(predictions[0]) == 3
        assert sum(predictions[0]) == pytest.approx(1.0, abs=1e-3)
        answers[suffix] = predictions
    assert answers["/labels/stable"] == answers["/versions/2"]
    assert answers["/labels/canary"] == answers[""]
    # Columnar format answers "outputs".
    columnar = lab.post(f"/v1/models/{m}/versions/2:predict", {"inputs": DOG["instances"]})
    assert columnar.status_code == 200, columnar.text
    assert columnar.json()["outputs"] == answers["/versions/2"]


def test_19_rest_errors_404_unknown_model_and_version_400_unknown_label(lab: Tfs) -> None:
    m = lab.name("animals")
    cases = [
        ("/v1/models/nosuchmodel", 404, "Could not find any versions of model nosuchmodel"),
        (f"/v1/models/{m}/versions/9", 404, f"Could not find version 9 of model {m}"),
        (f"/v1/models/{m}/labels/nosuchlabel/metadata", 400,
         "Unrecognized servable version label: nosuchlabel"),
    ]  # fmt: skip
    for path, code, message in cases:
        response = lab.get(path)
        assert response.status_code == code, (path, response.text)
        assert response.json() == {"error": message}
    # The same for predict (messages of predict are not pinned by the reference).
    for path, code in (
        ("/v1/models/nosuchmodel:predict", 404),
        (f"/v1/models/{m}/versions/9:predict", 404),
        (f"/v1/models/{m}/labels/nosuchlabel:predict", 400),
    ):
        response = lab.post(path)
        assert response.status_code == code, (path, response.text)
        assert set(response.json()) == {"error"} and response.json()["error"]


def test_20_grpc_get_model_status_states_and_not_found(lab: Tfs) -> None:
    m = lab.name("animals")
    stub = lab.model_service
    response = stub.GetModelStatus(
        pb.GetModelStatusRequest(model_spec=pb.ModelSpec(name=m)), timeout=10
    )
    listed = sorted(
        (s.version, s.state, s.status.error_code) for s in response.model_version_status
    )
    assert listed == [(1, 30, 0), (2, 30, 0), (3, 30, 0)]
    assert pb.ModelVersionStatus.State.Name(response.model_version_status[0].state) == "AVAILABLE"
    one = stub.GetModelStatus(
        pb.GetModelStatusRequest(
            model_spec=pb.ModelSpec(name=m, version=wrappers_pb2.Int64Value(value=2))
        ),
        timeout=10,
    )
    assert [(s.version, s.state) for s in one.model_version_status] == [(2, 30)]
    for spec, message in (
        (pb.ModelSpec(name="nosuchmodel"), "Could not find any versions of model nosuchmodel"),
        (
            pb.ModelSpec(name=m, version=wrappers_pb2.Int64Value(value=9)),
            f"Could not find version 9 of model {m}",
        ),
    ):
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetModelStatus(pb.GetModelStatusRequest(model_spec=spec), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == message


def test_21_requests_without_version_go_to_the_highest_available_version(
    start_tfs: StartTfs,
) -> None:
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), all_versions=True)
        ),
        models={"a": [1, 2]},
        extra_args=["--sim_load_seconds_for=a:3=1.5"],
    )
    a = tfs.name("a")
    v2 = tfs.answer(f"/v1/models/{a}/versions/2")
    assert tfs.answer(f"/v1/models/{a}") == v2
    tfs.add_version(a, 3, source=3)
    tfs.add_version(a, 4, saved_model=b"")  # higher, but never AVAILABLE
    if tfs.is_simulator:  # while 3 loads, 2 is the highest AVAILABLE
        tfs.wait_states(a, {3: "LOADING"})
        assert tfs.get(f"/v1/models/{a}/metadata").json()["model_spec"]["version"] == "2"
        assert tfs.answer(f"/v1/models/{a}") == v2
    tfs.wait_states(a, {3: "AVAILABLE"})
    assert tfs.get(f"/v1/models/{a}/metadata").json()["model_spec"]["version"] == "3"
    assert tfs.answer(f"/v1/models/{a}") == tfs.answer(f"/v1/models/{a}/versions/3")
