"""A ConfigMap volume as the kubelet writes it (reconciler.testing.kubelet), read by the
desired-state reader one update at a time (reconciler.kubelet_volume)."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from reconciler.desired import parse_documents
from reconciler.desired_files import load_desired, read_documents
from reconciler.kubelet_volume import generation, read_generation
from reconciler.problems import InputError
from reconciler.testing.kubelet import AtomicWriter

STAMP = re.compile(r"^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d+$")


def model(name: str, version: int) -> bytes:
    return (
        f"apiVersion: tfs-reconciler/v1\nmodels:\n  {name}:\n    versions: [{version}]\n"
    ).encode()


def test_the_writer_lays_the_folder_out_as_the_kubelet_does(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    assert writer.write({"a.yaml": b"one", "b.yaml": b"two"})
    first = os.readlink(tmp_path / "..data")
    assert STAMP.match(first)
    assert os.readlink(tmp_path / "a.yaml") == "..data/a.yaml"
    assert os.readlink(tmp_path / "b.yaml") == "..data/b.yaml"
    assert (tmp_path / first / "a.yaml").read_bytes() == b"one"
    assert oct((tmp_path / first).stat().st_mode & 0o777) == oct(0o755)
    assert oct((tmp_path / first / "a.yaml").stat().st_mode & 0o777) == oct(0o644)

    assert writer.write({"a.yaml": b"three"})
    second = os.readlink(tmp_path / "..data")
    assert second != first and STAMP.match(second)
    assert not (tmp_path / first).exists()  # the old folder is removed
    assert not os.path.lexists(tmp_path / "b.yaml")  # a dropped key's link too
    assert not os.path.lexists(tmp_path / "..data_tmp")
    assert (tmp_path / "a.yaml").read_bytes() == b"three"
    assert sorted(os.listdir(tmp_path)) == sorted([second, "..data", "a.yaml"])

    assert not writer.write({"a.yaml": b"three"})  # unchanged: nothing written
    assert os.readlink(tmp_path / "..data") == second


def test_the_steps_come_in_the_kubelets_order(tmp_path: Path) -> None:
    steps: list[str] = []
    AtomicWriter(tmp_path).write({"a.yaml": b"one"})
    AtomicWriter(tmp_path, on_step=steps.append).write({"a.yaml": b"two"})
    assert steps == [
        "payload_written",
        "data_tmp_linked",
        "swapped",
        "links_created",
        "old_links_removed",
        "old_removed",
    ]


def test_paths_the_kubelet_refuses_are_refused(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    for bad in ("", "/abs", "a/../b", "..data", "x" * 256):
        with pytest.raises(ValueError):
            writer.write({bad: b""})


def test_the_desired_state_is_read_through_data_with_the_visible_names(tmp_path: Path) -> None:
    AtomicWriter(tmp_path).write({"a.yaml": model("a", 1), "b.yaml": model("b", 1)})
    documents = read_documents(tmp_path)
    # The hidden entries are not desired-state files: each model once, by its visible name.
    assert [name for name, _ in documents] == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    state = parse_documents(documents)
    assert [m.name for m in state.models] == ["a", "b"]


def test_a_problem_names_the_visible_file(tmp_path: Path) -> None:
    AtomicWriter(tmp_path).write({"a.yaml": b"apiVersion: tfs-reconciler/v1\nmodels: 3\n"})
    with pytest.raises(InputError) as raised:
        parse_documents(read_documents(tmp_path))
    assert str(tmp_path / "a.yaml") in str(raised.value)
    assert "..20" not in str(raised.value)


def test_a_swap_while_reading_starts_the_read_again(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({"a.yaml": model("a", 1), "b.yaml": model("b", 1)})
    calls: list[Path] = []

    def read_with_a_swap_in_the_middle(root: Path) -> list[tuple[str, bytes]]:
        calls.append(root)
        first = (root / "a.yaml").read_bytes()
        if len(calls) == 1:  # the kubelet swaps (and removes this folder) between two reads
            writer.write({"a.yaml": model("a", 2), "b.yaml": model("b", 2)})
        try:
            second = (root / "b.yaml").read_bytes()
        except FileNotFoundError as error:
            raise InputError([]) from error
        return [(str(root / "a.yaml"), first), (str(root / "b.yaml"), second)]

    documents = read_generation(tmp_path, read_with_a_swap_in_the_middle)
    assert documents is not None
    assert len(calls) == 2
    assert [raw for _, raw in documents] == [model("a", 2), model("b", 2)]


def test_reads_never_mix_two_updates(tmp_path: Path) -> None:
    """The kubelet updates two keys together, over and over; every read sees both keys of
    one update (read key by key through the per-key links, reads mix updates)."""
    writer = AtomicWriter(tmp_path)
    writer.write({"a.yaml": model("a", 1), "b.yaml": model("b", 1)})
    stop = threading.Event()

    def kubelet() -> None:
        version = 1
        while not stop.wait(0.001):  # the real kubelet updates once a sync, not in a loop
            version += 1
            writer.write({"a.yaml": model("a", version), "b.yaml": model("b", version)})

    thread = threading.Thread(target=kubelet)
    thread.start()
    mixed = []
    try:
        for _ in range(200):
            state = parse_documents(read_documents(tmp_path))
            versions = {m.name: m.policy for m in state.models}
            if versions["a"] != versions["b"]:
                mixed.append(versions)
    finally:
        stop.set()
        thread.join()
    assert mixed == []


def test_a_plain_folder_is_not_a_kubelet_volume(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(model("a", 1))
    assert generation(tmp_path) is None
    (tmp_path / "..data").symlink_to("/etc")  # not the kubelet's: read as a plain folder
    assert generation(tmp_path) is None
    assert [n for n, _ in read_documents(tmp_path)] == [str(tmp_path / "a.yaml")]


def test_a_verify_request_in_the_configmap_is_accepted(tmp_path: Path) -> None:
    """The kubelet's links (key -> ..data/key -> ..TIMESTAMP/key) resolve inside the folder:
    the desired-state checks that refuse links out of it accept them."""
    text = model("a", 1) + b"    verify:\n      request: req.json\n"
    AtomicWriter(tmp_path).write({"a.yaml": text, "req.json": b'{"instances": [1]}'})
    state = load_desired(tmp_path)
    assert state.models[0].verify_request == str(tmp_path / "req.json")
