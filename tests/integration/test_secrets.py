"""The secret commands against a real 3-manager cluster: Swarm's rules and texts."""

from __future__ import annotations

import json
import re

from swarmsecrets.api.v1 import control_pb2, objects_pb2
from tests.framework import Cluster, wait_until

ID = re.compile(r"^[0-9a-z]{25}$")


def test_create_on_one_manager_is_listed_on_every_manager(cluster: Cluster) -> None:
    m1, m2, m3 = cluster.managers
    sid = m2.ok("secret", "create", "-l", "env=prod", "-l", "team", "everywhere", "-", input="v1\n").strip()
    assert ID.match(sid), sid
    for n in (m1, m2, m3):
        out = n.ok("secret", "ls", "--format", "{{.ID}} {{.Name}}")
        assert f"{sid} everywhere" in out.splitlines()
    doc = json.loads(m3.ok("secret", "inspect", "everywhere"))
    assert doc[0]["ID"] == sid
    assert doc[0]["Spec"]["Name"] == "everywhere"
    assert doc[0]["Spec"]["Labels"] == {"env": "prod", "team": ""}
    assert doc[0]["Version"]["Index"] > 0
    assert "Data" not in json.dumps(doc) and "djEK" not in json.dumps(doc)


def test_payload_size_limits(cluster: Cluster) -> None:
    m1 = cluster.managers[0]
    m1.ok("secret", "create", "biggest", "-", input=b"x" * 511_999)
    err = m1.fails("secret", "create", "toobig", "-", input=b"x" * 512_000)
    assert "secret data must be larger than 0 and less than 512000 bytes" in err
    err = m1.fails("secret", "create", "empty", "-", input=b"")
    assert "error reading from STDIN: data is empty" in err
    names = m1.ok("secret", "ls", "--format", "{{.Name}}").split()
    assert "biggest" in names and "toobig" not in names and "empty" not in names


def test_name_rules(cluster: Cluster) -> None:
    m1 = cluster.managers[0]
    text = ("invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end "
            "character must be [a-zA-Z0-9]")
    for bad in ("-lead", "trail.", "has space", "a" * 65, "x/y", "ümlaut"):
        assert text in m1.fails("secret", "create", "--", bad, "-", input="v"), bad
    for good in ("a", "A-b_c.D", "z" * 64, "9--9..9"):
        m1.ok("secret", "create", good, "-", input="v")


def test_names_are_unique_case_insensitively(cluster: Cluster) -> None:
    m1, m2, _ = cluster.managers
    m1.ok("secret", "create", "CaseName", "-", input="v")
    assert "secret casename already exists" in m2.fails("secret", "create", "casename", "-", input="v")
    # SwarmKit's name index is lower-cased: a name prefix matches whatever the case.
    assert len(m1.ok("secret", "ls", "-q", "-f", "name=casename").split()) == 1


def test_resolution_by_id_name_and_prefix(cluster: Cluster) -> None:
    m1 = cluster.managers[0]
    # Many secrets, so that some share an ID prefix: made through the API (a CLI process each would
    # cost seconds); resolved below through the CLI, which is what is tested.
    control = m1.control()
    ids = [control.CreateSecret(control_pb2.CreateSecretRequest(
        spec=objects_pb2.SecretSpec(name=f"prefix{i}", data=b"v")), timeout=20).secret.id for i in range(40)]
    by_id = json.loads(m1.ok("secret", "inspect", ids[0]))[0]
    assert by_id["Spec"]["Name"] == "prefix0"
    # A unique prefix resolves; a prefix shared by several is ambiguous. The cluster is shared with
    # the other tests of this module: count every secret's ID, and skip prefixes that are also a
    # secret's name (an exact name wins over a prefix).
    all_ids = m1.ok("secret", "ls", "-q").split()
    assert set(ids) <= set(all_ids)  # full IDs
    names = set(m1.ok("secret", "ls", "--format", "{{.Name}}").split())
    unique = next(i[:6] for i in ids if sum(j.startswith(i[:6]) for j in all_ids) == 1 and i[:6] not in names)
    assert json.loads(m1.ok("secret", "inspect", unique))[0]["ID"].startswith(unique)
    shared = next((p for p in "0123456789abcdefghijklmnopqrstuvwxyz"
                   if sum(i.startswith(p) for i in ids) > 1 and p not in names), None)
    assert shared is not None
    err = m1.fails("secret", "inspect", shared)
    assert re.search(rf"secret {shared} is ambiguous \(\d+ matches found\)", err), err
    assert "secret nosuchthing not found" in m1.fails("secret", "inspect", "nosuchthing")


def test_rm_reports_every_failure_and_removes_the_rest(cluster: Cluster) -> None:
    m1, _, m3 = cluster.managers
    m1.ok("secret", "create", "rm1", "-", input="v")
    m1.ok("secret", "create", "rm2", "-", input="v")
    p = m1.cli("secret", "rm", "rm1", "missing1", "rm2", "missing2")
    assert p.returncode != 0
    assert p.stdout.split() == ["rm1", "rm2"]
    assert "missing1" in p.stderr and "missing2" in p.stderr
    names = m3.ok("secret", "ls", "--format", "{{.Name}}").split()
    assert "rm1" not in names and "rm2" not in names


def test_ls_filters_and_formats(cluster: Cluster) -> None:
    m1 = cluster.managers[0]
    m1.ok("secret", "create", "-l", "tier=web", "flt-web", "-", input="v")
    m1.ok("secret", "create", "-l", "tier=db", "flt-db", "-", input="v")
    assert m1.ok("secret", "ls", "--format", "{{.Name}}", "-f", "label=tier=db").split() == ["flt-db"]
    assert set(m1.ok("secret", "ls", "--format", "{{.Name}}", "-f", "label=tier").split()) == {"flt-web", "flt-db"}
    assert set(m1.ok("secret", "ls", "--format", "{{.Name}}", "-f", "name=flt-").split()) == {"flt-web", "flt-db"}
    rows = [json.loads(line) for line in m1.ok("secret", "ls", "--format", "json", "-f", "name=flt-").splitlines()]
    assert {r["Name"] for r in rows} == {"flt-web", "flt-db"}
    table = m1.ok("secret", "ls", "-f", "name=flt-").splitlines()
    assert table[0].split() == ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]
    assert json.loads(m1.ok("secret", "inspect", "--format", "{{json .Spec.Labels}}", "flt-db")) == {"tier": "db"}
    pretty = m1.ok("secret", "inspect", "--pretty", "flt-db")
    assert re.search(r"^Name:\s+flt-db$", pretty, re.M) and " - tier=db" in pretty


def test_label_only_update(cluster: Cluster) -> None:
    from swarmsecrets.api.v1 import control_pb2, objects_pb2
    from swarmsecrets.client import LocalClient, LocalError, Status

    m1, m2, _ = cluster.managers
    m1.ok("secret", "create", "-l", "a=1", "upd", "-", input="payload")
    with LocalClient(m2.sock) as client:
        stub = client.control
        cur = stub.GetSecret(control_pb2.GetSecretRequest(secret_id="upd")).secret
        res = stub.UpdateSecret(control_pb2.UpdateSecretRequest(
            secret_id=cur.id, secret_version=cur.version,
            spec=objects_pb2.SecretSpec(name="upd", labels={"a": "2"}, data=b"payload"))).secret
        assert dict(res.spec.labels) == {"a": "2"} and res.version.index > cur.version.index
        for spec in (objects_pb2.SecretSpec(name="upd", labels={}, data=b"other"),
                     objects_pb2.SecretSpec(name="UPD", labels={})):
            try:
                stub.UpdateSecret(control_pb2.UpdateSecretRequest(
                    secret_id=cur.id, secret_version=res.version, spec=spec))
            except LocalError as e:
                assert e.code is Status.INVALID_ARGUMENT
                assert e.message == "only updates to Labels are allowed"
            else:
                raise AssertionError("a data or name change was accepted")
        try:
            stub.UpdateSecret(control_pb2.UpdateSecretRequest(
                secret_id=cur.id, secret_version=cur.version, spec=objects_pb2.SecretSpec(name="upd")))
        except LocalError as e:
            assert e.message == "update out of sequence"
        else:
            raise AssertionError("a stale version was accepted")
    assert json.loads(m1.ok("secret", "inspect", "upd"))[0]["Spec"]["Labels"] == {"a": "2"}


def test_retry_with_same_request_id_returns_first_outcome(cluster: Cluster) -> None:
    from swarmsecrets.api.v1 import control_pb2, objects_pb2
    from swarmsecrets.client import LocalClient

    m1, m2, _ = cluster.managers
    spec = objects_pb2.SecretSpec(name="retried", data=b"v")
    with LocalClient(m1.sock) as c1, LocalClient(m2.sock) as c2:
        first = c1.control.CreateSecret(
            control_pb2.CreateSecretRequest(spec=spec, request_id="rid-create-1")).secret
        again = c2.control.CreateSecret(
            control_pb2.CreateSecretRequest(spec=spec, request_id="rid-create-1")).secret
        assert again.id == first.id
        c1.control.RemoveSecret(
            control_pb2.RemoveSecretRequest(secret_id="retried", request_id="rid-rm-1"))
        c2.control.RemoveSecret(
            control_pb2.RemoveSecretRequest(secret_id="retried", request_id="rid-rm-1"))
    wait_until(lambda: "retried" not in m2.ok("secret", "ls", "--format", "{{.Name}}").split())


def test_swarm_reference_cases_through_the_cli(cluster: Cluster) -> None:
    """Cases of Swarm's own tests (see tests/unit/test_swarm_reference.py) as the real CLI shows them:
    TestListSecrets (moby/swarmkit) and TestSecretList (moby/moby): name, name-prefix and ID-prefix
    filters OR'd, labels AND'd; TestSecretCreateResolve (moby/moby): a full ID before a full name,
    and never a name prefix; TestCreateService and TestSecretValidation
    (moby/swarmkit): a duplicate service name, and an added reference whose target the service
    already uses. Objects are set up over gRPC; what a user sees goes through the CLI."""
    from swarmsecrets.api.v1 import control_pb2, objects_pb2

    m1 = cluster.managers[0]
    control = m1.control()

    def create(name: str, **labels: str) -> str:
        spec = objects_pb2.SecretSpec(name=name, data=b"TESTINGDATA", labels=labels)
        return str(control.CreateSecret(control_pb2.CreateSecretRequest(spec=spec), timeout=10).secret.id)

    create("refls0_list", type="test")
    id1 = create("refls1_list", type="production")
    listed = m1.ok("secret", "ls", "--format", "{{.Name}}", "-f", "name=REFLS0", "-f", f"id={id1[:10]}",
                   "-f", "label=type")
    assert sorted(listed.split()) == ["refls0_list", "refls1_list"]
    listed = m1.ok("secret", "ls", "--format", "{{.Name}}", "-f", "name=refls", "-f", "label=type=test")
    assert listed.split() == ["refls0_list"]

    real = create("test_secret_resolve")
    fake = create(real)  # named after the other's ID
    assert m1.ok("secret", "rm", real).strip() == real  # the full ID wins over the name
    assert f"secret {real[:5]} not found" in m1.fails("secret", "rm", real[:5])  # a name prefix is no name
    left = {s.id: s.spec.name for s in control.ListSecrets(control_pb2.ListSecretsRequest(), timeout=10).secrets}
    assert real not in left and left[fake] == real

    create("ref_a")
    create("ref_b")
    spec = objects_pb2.ServiceSpec(name="notunique", command=["sleep", "9"], secrets=[objects_pb2.SecretReference(
        secret_name="ref_a", file=objects_pb2.FileTarget(name="t", uid="0", gid="0", mode=0o444))])
    control.CreateService(control_pb2.CreateServiceRequest(spec=spec), timeout=10)
    err = m1.fails("service", "create", "--name", "notunique", "--", "sleep", "9")
    assert err == ("Error response from daemon: name conflicts with an existing object: "
                   "service notunique already exists")
    err = m1.fails("service", "update", "--secret-add", "source=ref_b,target=t", "notunique")
    assert err == "Error response from daemon: secret references 'ref_a' and 'ref_b' have a conflicting target: 't'"
    control.RemoveService(control_pb2.RemoveServiceRequest(service_id="notunique"), timeout=10)
