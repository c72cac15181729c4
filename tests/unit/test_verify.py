"""verify_version against a tiny local HTTP server that answers as a (good or bad) TFS would.

The simulator always answers with the shape its signature declares, so the bad answers a real
model can give (wrong shape, wrong count, errors) are served here by hand.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing.simulator import free_port
from reconciler.tfs_rest import TfsRest
from reconciler.verify import VerifyFailed, expected_output_shapes, verify_version

METADATA = {
    "model_spec": {"name": "animals", "signature_name": "", "version": "4"},
    "metadata": {
        "signature_def": {
            "signature_def": {
                "serving_default": {
                    "outputs": {
                        "softmax": {
                            "dtype": "DT_FLOAT",
                            "tensor_shape": {
                                "dim": [{"size": "-1", "name": ""}, {"size": "3", "name": ""}],
                                "unknown_rank": False,
                            },
                            "name": "StatefulPartitionedCall:0",
                        }
                    },
                    "method_name": "tensorflow/serving/predict",
                }
            }
        }
    },
}


class FakeTfs(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.seen: list[tuple[str, str, Any]] = []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeTfs

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.seen.append((method, self.path, body))
        status, reply = self.server.answers.get((method, self.path), (404, {"error": "nope"}))
        data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")


@pytest.fixture
def tfs() -> Iterator[FakeTfs]:
    server = FakeTfs()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    server.answers[("GET", "/v1/models/animals/versions/4/metadata")] = (200, METADATA)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    path = tmp_path / "dog.json"
    path.write_text(json.dumps({"instances": [[[0.1]], [[0.2]]]}))
    return path


PREDICT = ("POST", "/v1/models/animals/versions/4:predict")


def test_a_good_answer_passes_and_the_request_is_the_file(tfs: FakeTfs, request_file: Path) -> None:
    tfs.answers[PREDICT] = (200, {"predictions": [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]})
    verify_version(TfsRest(tfs.url), "animals", 4, str(request_file))
    assert ("POST", PREDICT[1], json.loads(request_file.read_text())) in tfs.seen


def test_an_error_status_fails_with_tfs_message(tfs: FakeTfs, request_file: Path) -> None:
    tfs.answers[PREDICT] = (400, {"error": "Expected prediction signature method_name"})
    with pytest.raises(VerifyFailed) as caught:
        verify_version(TfsRest(tfs.url), "animals", 4, str(request_file))
    assert str(caught.value) == (
        "verification of animals version 4: HTTP 400: Expected prediction signature method_name"
    )


def test_a_prediction_of_the_wrong_shape_fails(tfs: FakeTfs, request_file: Path) -> None:
    tfs.answers[PREDICT] = (200, {"predictions": [[0.5, 0.5], [0.5, 0.5]]})
    with pytest.raises(
        VerifyFailed, match=r"a prediction has shape \[2\], the signature declares \[3\]"
    ):
        verify_version(TfsRest(tfs.url), "animals", 4, str(request_file))


def test_a_scalar_where_a_vector_is_declared_fails(tfs: FakeTfs, request_file: Path) -> None:
    tfs.answers[PREDICT] = (200, {"predictions": [0.5, 0.5]})
    with pytest.raises(VerifyFailed, match=r"shape \[\], the signature declares \[3\]"):
        verify_version(TfsRest(tfs.url), "animals", 4, str(request_file))


def test_too_few_predictions_fail(tfs: FakeTfs, request_file: Path) -> None:
    tfs.answers[PREDICT] = (200, {"predictions": [[0.1, 0.2, 0.7]]})
    with pytest.raises(VerifyFailed, match="1 predictions for 2 instances"):
        verify_version(TfsRest(tfs.url), "animals", 4, str(request_file))


def test_an_answer_without_predictions_fails(tfs: FakeTfs, request_file: Path) -> None:
    tfs.answers[PREDICT] = (200, {"something": "else"})
    with pytest.raises(VerifyFailed, match="no predictions or outputs"):
        verify_version(TfsRest(tfs.url), "animals", 4, str(request_file))


def test_an_answer_that_is_not_json_fails(tfs: FakeTfs, request_file: Path) -> None:
    tfs.answers[PREDICT] = (200, b"<html>proxy error</html>")
    with pytest.raises(VerifyFailed, match="HTTP 200"):
        verify_version(TfsRest(tfs.url), "animals", 4, str(request_file))


def test_tfs_not_answering_fails(request_file: Path) -> None:
    with pytest.raises(VerifyFailed, match="did not answer"):
        verify_version(TfsRest(f"http://127.0.0.1:{free_port()}"), "animals", 4, str(request_file))


def test_expected_output_shapes_drop_the_batch_dimension() -> None:
    assert expected_output_shapes(METADATA) == [(3,)]
    assert expected_output_shapes({"metadata": {}}) == []


# --- the request against the signature (issue 9) -------------------------------------------------


def _metadata(inputs: dict[str, tuple[str, list[int]]]) -> dict[str, Any]:
    tensors = {
        name: {
            "dtype": dtype,
            "tensor_shape": {"dim": [{"size": str(d)} for d in dims], "unknown_rank": False},
        }
        for name, (dtype, dims) in inputs.items()
    }
    return {
        "metadata": {"signature_def": {"signature_def": {"serving_default": {"inputs": tensors}}}}
    }


IMAGE = _metadata({"input_image": ("DT_FLOAT", [-1, 8, 8, 3])})
PIXELS = [[[0.5, 0.5, 0.5]] * 8] * 8


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"instances": [PIXELS]}, None),
        ({"instances": [{"input_image": PIXELS}]}, None),
        ({"inputs": {"input_image": [PIXELS]}}, None),
        ({"inputs": [PIXELS, PIXELS]}, None),
        ({"instances": [{"image": PIXELS}]}, "JSON object: does not have named input: input_image"),
        ({"inputs": {"image": [PIXELS]}}, "Missing named input: input_image in 'inputs' object."),
        ({"instances": [[[["a", "b", "c"]] * 8] * 8]}, "not of expected type: DT_FLOAT"),
        ({"instances": [[[[1.0, 2.0]] * 8] * 8]}, "shape [1, 8, 8, 2] (batch of 1)"),
        ({"instances": [PIXELS, PIXELS[:4]]}, "instances have different shapes"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"instances": [PIXELS], "inputs": [PIXELS]}, "expecting only one of 'inputs' or"),
        ({"instances": [PIXELS], "signature_name": "other"}, "has no signature 'other'"),
    ],
)
def test_a_request_is_checked_against_the_signature_as_json_tensor_cc_does(
    body: Any, problem: str | None
) -> None:
    """util/json_tensor.cc FillPredictRequestFromJson: named inputs, dtypes, equal shapes."""
    from reconciler.verify import request_problems

    found = request_problems(body, IMAGE)
    if problem is None:
        assert found == []
    else:
        assert any(problem in text for text in found), found


def test_two_inputs_need_every_instance_to_name_both() -> None:
    from reconciler.verify import request_problems

    metadata = _metadata({"a": ("DT_INT64", [-1]), "b": ("DT_STRING", [-1])})
    assert request_problems({"instances": [{"a": 1, "b": "x"}]}, metadata) == []
    assert request_problems({"instances": [1]}, metadata)
    assert (
        "does not have named input: b" in request_problems({"instances": [{"a": 1}]}, metadata)[0]
    )
    assert "DT_INT64" in request_problems({"instances": [{"a": 1.5, "b": "x"}]}, metadata)[0]


def test_verification_checks_the_loaded_version_s_signature_before_predicting(
    tfs: FakeTfs, tmp_path: Path
) -> None:
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"instances": [{"image": PIXELS}]}))
    tfs.answers[("GET", "/v1/models/animals/versions/4/metadata")] = (200, IMAGE)
    with pytest.raises(VerifyFailed, match="does not fit its signature: JSON object: does not"):
        verify_version(TfsRest(tfs.url), "animals", 4, str(request))
    assert not [seen for seen in tfs.seen if seen[0] == "POST"]  # never sent


def test_signature_problems_name_the_verify_field_s_file_and_line(
    tfs: FakeTfs, tmp_path: Path
) -> None:
    from reconciler.desired_files import load_desired
    from reconciler.verify import signature_problems

    (tmp_path / "req.json").write_text(json.dumps({"instances": [{"image": PIXELS}]}))
    (tmp_path / "animals.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1, 2, 3]\n"
        "    labels: {stable: 2}\n    verify:\n      request: req.json\n"
    )
    tfs.answers[("GET", "/v1/models/animals/versions/2/metadata")] = (200, IMAGE)
    problems, notes = signature_problems(load_desired(tmp_path), TfsRest(tfs.url))
    assert notes == []
    (problem,) = problems
    assert str(problem).startswith(f"{tmp_path / 'animals.yaml'}:7:")
    assert "does not fit the signature of animals version 2: JSON object" in str(problem)


def test_signature_problems_say_so_when_tfs_does_not_answer(tmp_path: Path) -> None:
    from reconciler.desired_files import load_desired
    from reconciler.verify import signature_problems

    (tmp_path / "req.json").write_text(json.dumps({"instances": [PIXELS]}))
    (tmp_path / "animals.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1]\n"
        "    labels: {stable: 1}\n    verify:\n      request: req.json\n"
    )
    problems, notes = signature_problems(
        load_desired(tmp_path), TfsRest(f"http://127.0.0.1:{free_port()}")
    )
    assert problems == [] and "not checked against signatures" in notes[0]
