"""The fleet file: what it gives, and each problem named by file, line, column and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.fleet_file import (
    DnsDiscovery,
    DockerDiscovery,
    Parallel,
    Rollout,
    load_fleet,
    parse_fleet,
)
from reconciler.problems import InputError
from reconciler.replica import Replica

EXAMPLE = """\
apiVersion: tfs-reconciler/v1
fleet:
  replicas:
    - name: tfs-a
      rest: http://127.0.0.1:8501
      grpc: 127.0.0.1:8500
      config: tfs-a/models.config
      models_dir: /srv/tfs-a/models
    - name: tfs-b
      rest: http://127.0.0.1:8511/
  discover:
    docker: {label: tfs-reconciler.fleet=prod}
  rollout:
    canary: 1
    max_parallel: 25%
    max_failures: 0
    on_failure: rollback
"""


def problems(text: str, file: str = "fleet/fleet.yaml") -> list[str]:
    with pytest.raises(InputError) as caught:
        parse_fleet(file, text.encode())
    return [str(p) for p in caught.value.problems]


def test_the_example_gives_replicas_in_file_order_discovery_and_rollout() -> None:
    spec = parse_fleet("fleet/fleet.yaml", EXAMPLE.encode())
    assert spec.replicas == (
        Replica(
            "tfs-a",
            "http://127.0.0.1:8501",
            "127.0.0.1:8500",
            Path("fleet/tfs-a/models.config"),
            Path("/srv/tfs-a/models"),
        ),
        Replica("tfs-b", "http://127.0.0.1:8511"),
    )
    assert spec.discover == DockerDiscovery("tfs-reconciler.fleet=prod")
    assert spec.rollout == Rollout(1, Parallel(None, 25), 0, "rollback")


def test_rollout_defaults_are_one_canary_one_per_wave_no_failure_rollback() -> None:
    spec = parse_fleet(
        "f.yaml",
        b"apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n"
        b"    - {name: a, rest: 'http://h:1'}\n",
    )
    assert spec.rollout == Rollout(canary=1, max_parallel=Parallel(1), max_failures=0)
    assert spec.discover is None


def test_dns_discovery_alone_is_a_fleet() -> None:
    spec = parse_fleet(
        "f.yaml",
        b"apiVersion: tfs-reconciler/v1\nfleet:\n  discover:\n"
        b"    dns: {name: tfs.prod.internal, rest_port: 8501, grpc_port: 8500}\n",
    )
    assert spec.replicas == ()
    assert spec.discover == DnsDiscovery("tfs.prod.internal", 8501, 8500)


@pytest.mark.parametrize(
    ("parallel", "total", "wave"),
    [(Parallel(3), 10, 3), (Parallel(None, 25), 10, 3), (Parallel(None, 25), 2, 1),
     (Parallel(None, 100), 7, 7), (Parallel(None, 1), 1, 1)],
)  # fmt: skip
def test_a_percentage_is_of_the_fleet_rounded_up(parallel: Parallel, total: int, wave: int) -> None:
    assert parallel.of(total) == wave


def test_an_unknown_key_is_named_where_it_stands() -> None:
    text = EXAMPLE.replace("    canary: 1\n", "    canary: 1\n    canery: 2\n")
    assert problems(text) == [
        "fleet/fleet.yaml:15:5: fleet.rollout.canery: unknown key 'canery'"
        " (allowed: canary, max_failures, max_parallel, on_failure)"
    ]


def test_a_replica_without_rest_is_refused_at_its_item() -> None:
    text = EXAMPLE.replace("      rest: http://127.0.0.1:8511/\n", "      grpc: h:1\n")
    assert problems(text) == [
        "fleet/fleet.yaml:9:7: fleet.replicas[1]: missing required key 'rest'"
    ]


def test_max_parallel_must_be_a_count_or_a_percentage() -> None:
    for bad in ("0", "150%", "half", "2.5"):
        found = problems(EXAMPLE.replace("max_parallel: 25%", f"max_parallel: {bad}"))
        assert len(found) == 1
        assert found[0].startswith("fleet/fleet.yaml:15:19: fleet.rollout.max_parallel: ")
        assert "is not a wave size" in found[0]


def test_on_failure_is_rollback_or_pause() -> None:
    assert problems(EXAMPLE.replace("on_failure: rollback", "on_failure: retry")) == [
        "fleet/fleet.yaml:17:17: fleet.rollout.on_failure: 'retry' (a string) is not"
        " rollback or pause"
    ]


def test_a_negative_max_failures_is_out_of_range() -> None:
    assert problems(EXAMPLE.replace("max_failures: 0", "max_failures: -1")) == [
        "fleet/fleet.yaml:16:19: fleet.rollout.max_failures: -1 is out of range: 0 or more"
    ]


def test_a_replica_listed_twice_is_refused_with_the_first_line() -> None:
    text = EXAMPLE.replace("name: tfs-b", "name: tfs-a")
    assert problems(text) == [
        "fleet/fleet.yaml:9:13: fleet.replicas[1].name: replica 'tfs-a' is already listed (line 4)"
    ]


def test_two_replicas_with_one_models_config_are_refused() -> None:
    text = EXAMPLE.replace(
        "      rest: http://127.0.0.1:8511/\n",
        "      rest: http://127.0.0.1:8511/\n      config: ./tfs-a/models.config\n",
    )
    (found,) = problems(text)
    assert found.startswith("fleet/fleet.yaml:11:15: fleet.replicas[1].config: replica 'tfs-a'")


def test_a_fleet_with_no_replicas_and_no_discovery_is_refused() -> None:
    assert problems("apiVersion: tfs-reconciler/v1\nfleet: {}\n") == [
        "fleet/fleet.yaml:2:8: fleet: no replicas: list them under replicas, or find them"
        " with discover"
    ]


def test_discovery_takes_exactly_one_way() -> None:
    text = (
        "apiVersion: tfs-reconciler/v1\nfleet:\n  discover: {docker: {label: a}, dns: {name: b}}\n"
    )
    assert problems(text) == [
        "fleet/fleet.yaml:3:13: fleet.discover: give exactly one way: docker or dns"
    ]


def test_a_bad_replica_name_and_url_are_both_reported() -> None:
    text = EXAMPLE.replace("name: tfs-b", "name: ../etc").replace("http://127.0.0.1:8511/", "ftp:x")
    found = problems(text)
    assert [f.split(": ")[0:2] for f in found] == [
        ["fleet/fleet.yaml:9:13", "fleet.replicas[1].name"],
        ["fleet/fleet.yaml:10:13", "fleet.replicas[1].rest"],
    ]


def test_duplicate_keys_and_wrong_api_version_are_reported_together() -> None:
    text = EXAMPLE.replace("apiVersion: tfs-reconciler/v1", "apiVersion: v2").replace(
        "    canary: 1\n", "    canary: 1\n    canary: 2\n"
    )
    assert problems(text) == [
        "fleet/fleet.yaml:1:13: apiVersion: must be tfs-reconciler/v1, got 'v2' (a string)",
        "fleet/fleet.yaml:15:5: fleet.rollout.canary: duplicate key 'canary' (first at line 14)",
    ]


def test_invalid_yaml_names_its_position() -> None:
    (found,) = problems("apiVersion: tfs-reconciler/v1\nfleet: [\n")
    assert found.startswith("fleet/fleet.yaml:3:1: invalid YAML")


def test_a_list_document_is_refused() -> None:
    assert problems("- a\n") == [
        "fleet/fleet.yaml:1:1: expected a mapping with apiVersion and fleet"
    ]


def test_load_fleet_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_fleet(tmp_path / "fleet.yaml")
    assert str(caught.value) == f"{tmp_path / 'fleet.yaml'}: cannot read: No such file or directory"


def test_load_fleet_reads_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(EXAMPLE)
    spec = load_fleet(tmp_path / "fleet.yaml")
    assert spec.replicas[0].config == tmp_path / "tfs-a" / "models.config"
