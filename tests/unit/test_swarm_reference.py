"""Swarm's own tests as the reference: each case below mirrors a case of a Go test in moby/swarmkit
(manager/controlapi), moby/moby (integration/secret) or docker/cli (opts, cli/command/secret), named
in the case's id, and runs it against our control API (on a real store) or our CLI's parsers. The
cases our real CLI shows against a real cluster are in tests/integration/test_secrets.py.

Cases we cannot observe: internal secrets, secret drivers and templating, configs, networks,
published ports, mounts, health checks, resources, generic runtimes, service list filters, pending
node membership and engine labels (none of these exist here); renaming a service and changing its mode (our
update request carries neither). Cases we deliberately answer differently:
  - a secret target that is absolute or has '..' (SwarmKit TestSecretValidation accepts
    "../secretfile.txt" and "/file.txt"; the executor would have to reject them) is refused here;
  - ``mode=`` takes octal only: docker/cli reads "400" as decimal (0620) and accepts setuid bits and
    hex, which we refuse with a hint; what Go itself cannot parse gets docker/cli's exact text;
  - a uid or gid that is not numeric is refused here (docker/cli passes it on and the task fails);
  - the daemon's errors reach the user as ``Error response from daemon: <text>``, without gRPC's
    ``rpc error: code = ... desc =`` that Docker's CLI shows before SwarmKit's text;
  - a wrong number of arguments gets docker/cli's text on one line (docker adds the usage and the
    command's summary below it) and exit status 2, as every usage error here (docker: 1).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from swarmsecrets import errors, ids, validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.cli import main as cli_main
from swarmsecrets.cli.node import node_filter
from swarmsecrets.manager import state
from tests.unit.managerkit import Swarm, aborted, control, ctx, run

# --- moby/swarmkit TestListSecrets: names, name prefixes and ID prefixes OR'd; labels AND'd ------

LISTABLE = ["aaa", "aab", "abc", "bbb", "bac", "bbc", "ccc", "cac", "cbc", "ddd"]


def _listable_swarm() -> tuple[Swarm, dict[str, str]]:
    """The Go test's ten secrets, labelled mod2 and mod4 by their position."""
    swarm = Swarm()
    by_name = {}
    for i, name in enumerate(LISTABLE):
        created: state.Secret = swarm.proposer.apply(state.CreateSecret(
            rid=f"r-{name}", id=ids.new_id(), name=name, data=swarm.sealer.current().seal(b"secret"),
            key_id=swarm.sealer.key_id, labels={"mod2": str(i % 2), "mod4": str(i % 4)}))
        by_name[name] = created.id
    return swarm, by_name


LIST_CASES = [
    pytest.param({}, LISTABLE, id="TestListSecrets: no filter: all the available secrets are returned"),
    pytest.param({"names": ["aa"]}, [], id="TestListSecrets: searching for something that doesn't match"),
    pytest.param({"names": ["aaa", "bbb", "ccc"]}, ["aaa", "bbb", "ccc"],
                 id="TestListSecrets: multiple name filters are or-ed together"),
    pytest.param({"name_prefixes": ["aa", "bb"]}, ["aaa", "aab", "bbb", "bbc"],
                 id="TestListSecrets: multiple name prefix filters are or-ed together"),
    pytest.param({"id_prefixes": ["@aaa", "@bbb"]}, ["aaa", "bbb"],
                 id="TestListSecrets: multiple ID prefix filters are or-ed together"),
    pytest.param({"names": ["aaa", "ccc"], "name_prefixes": ["aa", "bb"], "id_prefixes": ["@aaa", "@ddd"]},
                 ["aaa", "aab", "bbb", "bbc", "ccc", "ddd"],
                 id="TestListSecrets: name prefix, name, and ID prefix filters are or-ed together"),
    pytest.param({"labels": {"mod2": "0", "mod4": "0"}}, ["aaa", "bac", "cbc"],
                 id="TestListSecrets: all labels in the label map must be matched"),
    pytest.param({"names": ["aaa", "ccc"], "name_prefixes": ["aa", "bb"], "id_prefixes": ["@aaa", "@ddd"],
                  "labels": {"mod2": "0"}}, ["aaa", "ccc"],
                 id="TestListSecrets: or-ed name, prefix and ID filters, but all labels must match"),
    # SwarmKit's name index is lower-cased: names and name prefixes match whatever the case; IDs do not.
    pytest.param({"names": ["AAA"], "name_prefixes": ["BB"]}, ["aaa", "bbb", "bbc"],
                 id="TestListSecrets (store ByName, ByNamePrefix): names match case-insensitively"),
    pytest.param({"id_prefixes": ["@AAA"]}, [], id="TestListSecrets (store ByIDPrefix): IDs match as given"),
]


@pytest.mark.parametrize(("filters", "expected"), LIST_CASES)
def test_list_secrets(filters: dict[str, Any], expected: list[str]) -> None:
    swarm, by_name = _listable_swarm()

    def resolve(value: str) -> str:  # "@name" stands for that secret's ID ("@AAA": its ID upper-cased)
        if not value.startswith("@"):
            return value
        secret_id = by_name[value[1:].lower()]
        return secret_id.upper() if value[1:].isupper() else secret_id

    f = {k: [resolve(v) for v in vs] if isinstance(vs, list) else vs for k, vs in filters.items()}

    async def test() -> None:
        req = control_pb2.ListSecretsRequest(filters=control_pb2.ListSecretsRequest.Filters(**f))
        got = (await control(swarm).ListSecrets(req, ctx())).secrets
        assert sorted(s.spec.name for s in got) == sorted(expected)
        assert all(s.id == by_name[s.spec.name] and not s.spec.data for s in got)

    run(test)


# --- moby/moby TestSecretList: the CLI's --filter flags, as the daemon maps them ------------------

CLI_FILTER_CASES = [
    pytest.param(["name=test0_"], ["test0_x"], id="TestSecretList: filter by name"),
    pytest.param(["id=@test1_x"], ["test1_x"], id="TestSecretList: filter by id"),
    pytest.param(["label=type"], ["test0_x", "test1_x"], id="TestSecretList: filter by label key"),
    pytest.param(["label=type=test"], ["test0_x"], id="TestSecretList: filter by label=key=value"),
    pytest.param(["label=type=production"], ["test1_x"], id="TestSecretList: filter by another label value"),
    # docker/cli sends each -f as is; the daemon takes name as a prefix, names as exact, id as a prefix.
    pytest.param(["name=test0", "name=test1"], ["test0_x", "test1_x"],
                 id="TestSecretList (daemon filters): several values of one filter are or-ed"),
    pytest.param(["names=test0_x"], ["test0_x"], id="TestSecretList (daemon filters): names= is exact"),
    pytest.param(["names=test0_"], [], id="TestSecretList (daemon filters): names= is not a prefix"),
    pytest.param(["label=type", "label=type=test"], ["test0_x"],
                 id="TestSecretList (daemon filters): the last value of one label key wins"),
    pytest.param([" NAME = test1 "], ["test1_x"], id="TestSecretListWithFilter (docker/cli): keys trimmed, any case"),
]


@pytest.mark.parametrize(("flags", "expected"), CLI_FILTER_CASES)
def test_secret_ls_filter_flags(flags: list[str], expected: list[str]) -> None:
    swarm = Swarm()
    ids_by_name = {}
    for name, kind in (("test0_x", "test"), ("test1_x", "production")):
        created: state.Secret = swarm.proposer.apply(state.CreateSecret(
            rid=f"r-{name}", id=ids.new_id(), name=name, data=swarm.sealer.current().seal(b"TESTINGDATA"),
            key_id=swarm.sealer.key_id, labels={"type": kind}))
        ids_by_name[name] = created.id
    parsed = validation.parse_filters([f"id={ids_by_name[f[4:]]}" if f.startswith("id=@") else f for f in flags])

    async def test() -> None:
        req = control_pb2.ListSecretsRequest(filters=control_pb2.ListSecretsRequest.Filters(
            names=parsed.names, name_prefixes=parsed.name_prefixes, id_prefixes=parsed.id_prefixes,
            labels=parsed.labels))
        got = (await control(swarm).ListSecrets(req, ctx())).secrets
        assert sorted(s.spec.name for s in got) == expected

    run(test)


@pytest.mark.parametrize(("flag", "message"), [
    pytest.param("foo=bar", "invalid filter 'foo'", id="TestSecretList (daemon filters): an unknown key"),
    pytest.param("name", "bad format of filter (expected name=value)",
                 id="TestSecretListWithFilter (docker/cli filters.ParseFlag): no '='"),
])
def test_secret_ls_bad_filter_flags(flag: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as e:
        validation.parse_filters([flag])
    assert e.value.message == message


# --- moby/swarmkit TestValidateSecretSpec, TestCreateSecret, TestGetSecret, TestUpdateSecret,
# TestRemoveUnusedSecret, TestRemoveUsedSecret; moby/moby TestSecretsCreateAndDelete ---------------

BAD_NAMES = ["", ".", "-", "_", ".name", "name.", "-name", "name-", "_name", "name_", "/a", "a/", "a/b", "..",
             "../a", "a/..", "withexclamation!", "with space", "with\nnewline", "with@splat", "with:colon",
             "with;semicolon", "snowman☃", "a" * 65]
GOOD_NAMES = ["0", "a", "A", "name-with--dashes", "name.with..dots", "name_with__underscores",
              "name.with-all_special", "02624name035with1699numbers015125", "a" * 64]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[f"TestValidateSecretSpec: bad name {n[:10]!r}" for n in BAD_NAMES])
def test_bad_secret_names(name: str) -> None:
    swarm = Swarm()

    async def test() -> None:
        err = await aborted(control(swarm).CreateSecret(control_pb2.CreateSecretRequest(
            spec=objects_pb2.SecretSpec(name=name, data=b"valid secret")), ctx()))
        expected = "name must be provided" if not name else errors.SECRET_NAME_INVALID
        assert (err.code, err.details) == (grpc.StatusCode.INVALID_ARGUMENT, expected)

    run(test)


@pytest.mark.parametrize("name", GOOD_NAMES, ids=[f"TestValidateSecretSpec: good name {n[:10]!r}" for n in GOOD_NAMES])
def test_good_secret_names(name: str) -> None:
    validation.validate_secret_name(name)


@pytest.mark.parametrize("data", [b"\xe2\x98\x83\n\t\r\x00 dg09236l;kajdgaj5%#9836[Q@!$]", b"valid secret", b"\0"],
                         ids=["TestValidateSecretSpec: binary data", "TestValidateSecretSpec: text data",
                              "TestValidateSecretSpec: 1 byte"])
def test_good_secret_data(data: bytes) -> None:
    validation.validate_secret_data(data)


def test_secret_lifecycle_codes_and_texts() -> None:
    """TestCreateSecret, TestGetSecret, TestUpdateSecret, TestRemoveUnusedSecret (moby/swarmkit);
    TestSecretsCreateAndDelete (moby/moby): each step's code and, where Swarm has one, its text."""
    swarm = Swarm()

    async def test() -> None:
        s = control(swarm)

        async def fails(call: Any) -> tuple[grpc.StatusCode, str]:
            err = await aborted(call)
            return err.code, err.details

        create = control_pb2.CreateSecretRequest(spec=objects_pb2.SecretSpec(name="name", data=b"secret"))
        assert await fails(s.CreateSecret(control_pb2.CreateSecretRequest(
            spec=objects_pb2.SecretSpec(name="validName")), ctx())) == (
            grpc.StatusCode.INVALID_ARGUMENT, errors.SECRET_SIZE_INVALID)  # TestValidateSecretSpec: no data
        created = (await s.CreateSecret(create, ctx())).secret
        assert created.spec.data == b"" and created.spec.name == "name"  # TestCreateSecret: data omitted
        assert await fails(s.CreateSecret(create, ctx())) == (  # TestCreateSecret: same spec again
            grpc.StatusCode.ALREADY_EXISTS, "secret name already exists")
        assert await fails(s.CreateSecret(control_pb2.CreateSecretRequest(  # names are unique ignoring case
            spec=objects_pb2.SecretSpec(name="NAME", data=b"x")), ctx())) == (
            grpc.StatusCode.ALREADY_EXISTS, "secret NAME already exists")

        assert await fails(s.GetSecret(control_pb2.GetSecretRequest(), ctx())) == (  # TestGetSecret
            grpc.StatusCode.INVALID_ARGUMENT, "secret ID must be provided")
        assert await fails(s.GetSecret(control_pb2.GetSecretRequest(secret_id="12345"), ctx())) == (
            grpc.StatusCode.NOT_FOUND, "secret 12345 not found")

        version = objects_pb2.Version(index=created.version.index)
        assert (await fails(s.UpdateSecret(control_pb2.UpdateSecretRequest(), ctx())))[0] == (  # TestUpdateSecret
            grpc.StatusCode.INVALID_ARGUMENT)
        assert (await fails(s.UpdateSecret(control_pb2.UpdateSecretRequest(
            secret_id="1234adsaa", secret_version=version, spec=created.spec), ctx())))[0] == grpc.StatusCode.NOT_FOUND
        for spec in (objects_pb2.SecretSpec(name="name", data=b"\x01"), objects_pb2.SecretSpec(name="AnotherName")):
            assert await fails(s.UpdateSecret(control_pb2.UpdateSecretRequest(
                secret_id=created.id, secret_version=version, spec=spec), ctx())) == (
                grpc.StatusCode.INVALID_ARGUMENT, errors.ONLY_LABELS)
        same = await s.UpdateSecret(control_pb2.UpdateSecretRequest(  # the original data is accepted
            secret_id=created.id, secret_version=version, spec=objects_pb2.SecretSpec(name="name", data=b"secret")),
            ctx())
        labelled = await s.UpdateSecret(control_pb2.UpdateSecretRequest(
            secret_id=created.id, secret_version=same.secret.version,
            spec=objects_pb2.SecretSpec(name="name", labels={"mod2": "0", "mod6": "0"})), ctx())
        assert dict(labelled.secret.spec.labels) == {"mod2": "0", "mod6": "0"} and labelled.secret.spec.data == b""

        assert await fails(s.RemoveSecret(control_pb2.RemoveSecretRequest(), ctx())) == (  # TestRemoveUnusedSecret
            grpc.StatusCode.INVALID_ARGUMENT, "secret ID must be provided")
        await s.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id=created.id), ctx())
        assert await fails(s.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id=created.id), ctx())) == (
            grpc.StatusCode.NOT_FOUND, f"secret {created.id} not found")
        assert await fails(s.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id="non-existing"), ctx())) == (
            grpc.StatusCode.NOT_FOUND, "secret non-existing not found")  # TestSecretsCreateAndDelete

    run(test)


def _ref(name: str, target: str, secret_id: str = "") -> objects_pb2.SecretReference:
    return objects_pb2.SecretReference(secret_name=name, secret_id=secret_id, file=objects_pb2.FileTarget(
        name=target, uid="0", gid="0", mode=0o444))


def _service(name: str, *refs: objects_pb2.SecretReference) -> control_pb2.CreateServiceRequest:
    return control_pb2.CreateServiceRequest(spec=objects_pb2.ServiceSpec(
        name=name, command=["sleep", "9"], secrets=list(refs)))


def test_remove_used_secret() -> None:
    """TestRemoveUsedSecret (moby/swarmkit): in use by two services, both named, in SwarmKit's words."""
    swarm = Swarm()
    swarm.secret("secretID1")
    unused = swarm.secret("secretID2")

    async def test() -> None:
        s = control(swarm)
        for svc in ("service1", "service2"):
            await s.CreateService(_service(svc, _ref("secretID1", "target.txt")), ctx())
        err = await aborted(s.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id="secretID1"), ctx()))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details == "secret 'secretID1' is in use by the following services: service1, service2"
        await s.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id=unused.id), ctx())

    run(test)


# --- moby/swarmkit TestSecretValidation, TestCreateService, TestValidateServiceSpec --------------

SERVICE_SECRET_CASES = [
    pytest.param([_ref("404", "secret.txt", "404")], "secret not found: 404",
                 id="TestSecretValidation: a secret that doesn't exist"),
    pytest.param([_ref("secret2", "secret1.txt", "@secret1")], "secret not found: secret2",
                 id="TestSecretValidation: an existing secret's ID with another name"),
    pytest.param([_ref("secret2", "secret2.txt"), _ref("secret3", "secret2.txt")],
                 "secret references 'secret2' and 'secret3' have a conflicting target: 'secret2.txt'",
                 id="TestSecretValidation: secret target conflicts"),
    pytest.param([_ref("secret2", "secret2.txt"), _ref("secret2", "secret2.txt")],
                 "secret references 'secret2' and 'secret2' have a conflicting target: 'secret2.txt'",
                 id="TestSecretValidation: target conflicts with same secret and two references"),
    pytest.param([_ref("secret2", "secret2.txt"), _ref("secret2", "different-target")], None,
                 id="TestSecretValidation: two different secretReferences using the same secret"),
    pytest.param([_ref("secret2", "")], "malformed file secret reference, invalid target file name provided",
                 id="TestSecretValidation: secret References with invalid filenames"),
    pytest.param([objects_pb2.SecretReference(secret_name="secret2")], "malformed secret reference, no target provided",
                 id="TestSecretValidation (validateSecretRefsSpec): every reference requires a target"),
    pytest.param([objects_pb2.SecretReference(file=objects_pb2.FileTarget(name="x"))], "malformed secret reference",
                 id="TestSecretValidation (validateSecretRefsSpec): no secret named"),
    *[pytest.param([_ref("secret2", name)], None, id=f"TestSecretValidation: valid filename {name}")
      for name in ("file.txt", ".file.txt", "_file-txt_.txt", "file../.txt", "subdir/file.txt")],
]


@pytest.mark.parametrize(("refs", "message"), SERVICE_SECRET_CASES)
def test_service_secret_references(refs: list[objects_pb2.SecretReference], message: str | None) -> None:
    swarm = Swarm()
    by_name = {name: swarm.secret(name).id for name in ("secret1", "secret2", "secret3")}
    refs = [objects_pb2.SecretReference(secret_name=r.secret_name, file=r.file if r.HasField("file") else None,
                                        secret_id=by_name.get(r.secret_id[1:], r.secret_id)) for r in refs]

    async def test() -> None:
        s = control(swarm)
        if message is None:
            created = (await s.CreateService(_service("service", *refs), ctx())).service
            assert [r.file.name for r in created.spec.secrets] == [r.file.name for r in refs]
            return
        err = await aborted(s.CreateService(_service("service", *refs), ctx()))
        assert (err.code, err.details) == (grpc.StatusCode.INVALID_ARGUMENT, message)
        # On update too: the service without them, then the conflicting references added.
        bare = (await s.CreateService(_service("service5"), ctx())).service
        err = await aborted(s.UpdateService(control_pb2.UpdateServiceRequest(
            service_id=bare.id, secret_add=refs), ctx()))
        assert (err.code, err.details) == (grpc.StatusCode.INVALID_ARGUMENT, message)
        assert [s.name for s in swarm.store.services()] == ["service5"]

    run(test)


def test_target_conflict_with_a_reference_the_service_has() -> None:
    """TestSecretValidation (moby/swarmkit), "secret target conflicts on update": an added reference
    whose target a kept one has; SwarmKit names the kept one first."""
    swarm = Swarm()
    swarm.secret("secret2")
    swarm.secret("secret3")

    async def test() -> None:
        s = control(swarm)
        svc = (await s.CreateService(_service("service5", _ref("secret2", "secret2.txt")), ctx())).service
        err = await aborted(s.UpdateService(control_pb2.UpdateServiceRequest(
            service_id=svc.id, secret_add=[_ref("secret3", "secret2.txt")]), ctx()))
        assert (err.code, err.details) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "secret references 'secret2' and 'secret3' have a conflicting target: 'secret2.txt'")

    run(test)


def test_create_service_name_rules() -> None:
    """TestCreateService and TestValidateServiceSpec (moby/swarmkit)."""
    swarm = Swarm()

    async def test() -> None:
        s = control(swarm)
        await s.CreateService(_service("notunique"), ctx())
        err = await aborted(s.CreateService(_service("notunique"), ctx()))
        assert (err.code, err.details) == (
            grpc.StatusCode.ALREADY_EXISTS, "name conflicts with an existing object: service notunique already exists")
        for name in ("", "longname" * 8):
            err = await aborted(s.CreateService(_service(name), ctx()))
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT, name
        err = await aborted(s.CreateService(control_pb2.CreateServiceRequest(), ctx()))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT

    run(test)


# --- moby/swarmkit TestGetNode, TestRemoveNodes, TestUpdateNodeDemote --------------------------------

def test_nodes() -> None:
    swarm = Swarm()
    swarm.add_node("id2", status="ready")
    swarm.add_node("id3", status="unknown")

    async def test() -> None:
        s = control(swarm)
        err = await aborted(s.GetNode(control_pb2.GetNodeRequest(node_id="invalid"), ctx()))  # TestGetNode
        assert err.code == grpc.StatusCode.NOT_FOUND
        err = await aborted(s.RemoveNode(control_pb2.RemoveNodeRequest(node_id="id2"), ctx()))  # TestRemoveNodes
        assert (err.code, err.details) == (grpc.StatusCode.FAILED_PRECONDITION,
                                           "node id2 is not down and can't be removed")
        await s.RemoveNode(control_pb2.RemoveNodeRequest(node_id="id2", force=True), ctx())
        await s.RemoveNode(control_pb2.RemoveNodeRequest(node_id="id3"), ctx())
        assert [n.id for n in swarm.store.nodes()] == [swarm.store.managers()[0].id]
        err = await aborted(s.UpdateNode(control_pb2.UpdateNodeRequest(  # TestUpdateNodeDemote: the last manager
            node_id=swarm.store.managers()[0].id, role="worker"), ctx()))
        assert (err.code, err.details) == (grpc.StatusCode.FAILED_PRECONDITION,
                                           "attempting to demote the last manager of the swarm")

    run(test)


def _node(node_id: str, role: str, hostname: str, **labels: str) -> objects_pb2.Node:
    return objects_pb2.Node(id=node_id, spec=objects_pb2.NodeSpec(role=role, labels=labels),
                            description=objects_pb2.NodeDescription(hostname=hostname))


NODES = [_node("id1", "manager", "m1", allcommon="node", nodelabel1="shouldmatch", nodelabel2="unique1"),
         _node("id2", "worker", "w2", allcommon="node", nodelabel1="shouldmatch", nodelabel2="unique2"),
         _node("id3", "worker", "w3", allcommon="node", nodelabel1="shouldnevermatch", nodelabel2="unique1")]


@pytest.mark.parametrize(("flags", "expected"), [
    pytest.param(["role=manager"], ["id1"], id="TestListNodes: list by role manager"),
    pytest.param(["role=worker"], ["id2", "id3"], id="TestListNodes: list by role worker"),
    pytest.param(["role=manager", "role=worker"], ["id1", "id2", "id3"], id="TestListNodes: two roles are or-ed"),
    pytest.param(["membership=accepted"], ["id1", "id2", "id3"], id="TestListNodes: list by membership accepted"),
    pytest.param(["role=worker", "membership=pending"], [], id="TestListNodes: role and membership are and-ed"),
    pytest.param(["node.label=allcommon=node"], ["id1", "id2", "id3"],
                 id="TestListNodesWithLabelFilter: allcommon=node node filter"),
    pytest.param(["node.label=allcommon=engine"], [], id="TestListNodesWithLabelFilter: allcommon=engine node filter"),
    pytest.param(["node.label=nodelabel1=shouldmatch"], ["id1", "id2"],
                 id="TestListNodesWithLabelFilter: nodelabel1=shouldmatch node filter"),
    pytest.param(["node.label=nodelabel1=shouldmatch", "node.label=nodelabel2=unique1"], ["id1"],
                 id="TestListNodesWithLabelFilter: two node filters"),
    pytest.param(["label=allcommon"], [], id="TestListNodesWithLabelFilter: engine labels (none here)"),
    pytest.param(["name=w", "id=id3"], ["id3"], id="TestListNodes (ListNodes filters): name and id are and-ed"),
])
def test_node_ls_filters(flags: list[str], expected: list[str]) -> None:
    wanted = node_filter(tuple(flags))
    assert [n.id for n in NODES if wanted(n)] == expected


# --- docker/cli TestSecretOptions, and SecretOpt.Set's errors ----------------------------------------

@pytest.mark.parametrize(("value", "ref"), [
    pytest.param("app-secret", validation.SecretRef("app-secret", "app-secret"), id="TestSecretOptions: Simple"),
    pytest.param("source=foo", validation.SecretRef("foo", "foo"), id="TestSecretOptions: Source"),
    pytest.param("source=foo,target=testing", validation.SecretRef("foo", "testing"),
                 id="TestSecretOptions: SourceTarget"),
    pytest.param("src=foo,target=testing", validation.SecretRef("foo", "testing"), id="TestSecretOptions: Shorthand"),
    pytest.param("source=foo,target=testing,uid=1000,gid=1001",
                 validation.SecretRef("foo", "testing", uid="1000", gid="1001"), id="TestSecretOptions: CustomUidGid"),
    pytest.param("source=foo,target=testing,uid=1000,gid=1001,mode=0444",
                 validation.SecretRef("foo", "testing", uid="1000", gid="1001", mode=0o444),
                 id="TestSecretOptions: CustomMode"),
    pytest.param("SOURCE=foo,Target=t", validation.SecretRef("foo", "t"),
                 id="TestSecretOptions (SecretOpt.Set): keys are case-insensitive"),
])
def test_secret_options(value: str, ref: validation.SecretRef) -> None:
    assert validation.parse_secret_spec(value) == ref


@pytest.mark.parametrize(("value", "message"), [
    pytest.param("src=foo,ro", "invalid field 'ro' must be a key=value pair", id="SecretOpt.Set: a field without ="),
    pytest.param("src=foo,=bar", "invalid field '=bar' must be a key=value pair", id="SecretOpt.Set: an empty key"),
    pytest.param("foo,bar", "invalid field 'foo' must be a key=value pair", id="SecretOpt.Set: two bare names"),
    pytest.param("src=foo,color=red", "invalid field in secret request: color", id="SecretOpt.Set: an unknown key"),
    pytest.param("target=x", "source is required", id="SecretOpt.Set: no source"),
    pytest.param("src=foo,mode=abc", 'invalid mode specified: strconv.ParseUint: parsing "abc": invalid syntax',
                 id="SecretOpt.Set: a mode that is not a number"),
    pytest.param("src=foo,mode=0800", 'invalid mode specified: strconv.ParseUint: parsing "0800": invalid syntax',
                 id="SecretOpt.Set: a mode with a digit its base has not"),
    pytest.param("src=foo,mode=99999999999",
                 'invalid mode specified: strconv.ParseUint: parsing "99999999999": value out of range',
                 id="SecretOpt.Set: a mode over 32 bits"),
])
def test_secret_option_errors(value: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as e:
        validation.parse_secret_spec(value)
    assert e.value.message == message


def test_duplicate_targets_on_the_command_line() -> None:
    """docker/cli ParseSecrets (cli/command/service): two --secret flags with one target, refused
    before anything is sent."""
    refs = [validation.parse_secret_spec(v) for v in ("src=a,target=t", "src=b,target=t")]
    with pytest.raises(errors.InvalidArgument, match="^duplicate secret target for b not allowed$"):
        validation.check_duplicate_targets(refs)


# --- docker/cli TestSecretCreateErrors, TestSecretListErrors, TestSecretRemoveErrors,
# TestSecretInspectErrors: the number of arguments, checked before the daemon is asked ---------------

@pytest.mark.parametrize(("argv", "message"), [
    pytest.param(["secret", "create", "too", "many", "arguments"],
                 '"swarmsecrets secret create" requires at least 1 and at most 2 arguments.',
                 id="TestSecretCreateErrors: too many arguments"),
    pytest.param(["secret", "ls", "foo"], '"swarmsecrets secret ls" accepts no arguments.',
                 id="TestSecretListErrors: an argument"),
    pytest.param(["secret", "rm"], '"swarmsecrets secret rm" requires at least 1 argument.',
                 id="TestSecretRemoveErrors: no argument"),
    pytest.param(["secret", "inspect"], '"swarmsecrets secret inspect" requires at least 1 argument.',
                 id="TestSecretInspectErrors: no argument"),
])
def test_argument_counts(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.run(["-H", "unix:///nonexistent/swarmsecrets.sock", *argv]) == 2
    assert capsys.readouterr().err == f"{message} See 'swarmsecrets {' '.join(argv[:2])} --help'.\n"
