"""The Control API's secrets, on a real store: sealed at rest, Swarm's texts, idempotent retries."""

from __future__ import annotations

from typing import Any

import grpc

from swarmsecrets import errors
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.manager import state
from swarmsecrets.manager.controlapi import ControlAPI, ControlServicer
from swarmsecrets.manager.controlapi.secrets import list_entry, secret_to_proto
from tests.unit.managerkit import Swarm, aborted, control, ctx, run


def spec(name: str, data: bytes = b"s3cret", **labels: str) -> objects_pb2.SecretSpec:
    return objects_pb2.SecretSpec(name=name, data=data, labels=labels)


def test_create_seals_the_value_and_answers_without_it() -> None:
    swarm = Swarm()

    async def test() -> None:
        resp = await control(swarm).CreateSecret(
            control_pb2.CreateSecretRequest(spec=spec("db", env="prod"), request_id="r1"), ctx())
        assert resp.secret.spec.name == "db" and dict(resp.secret.spec.labels) == {"env": "prod"}
        assert resp.secret.spec.data == b""
        stored = swarm.store.secret(resp.secret.id)
        assert stored is not None and b"s3cret" not in stored.data
        assert swarm.sealer.unseal(stored.data) == b"s3cret" and stored.key_id == swarm.sealer.key_id

    run(test)


def test_create_retried_with_the_same_request_id_answers_the_first_outcome() -> None:
    swarm = Swarm()

    async def test() -> None:
        s = control(swarm)
        first = await s.CreateSecret(control_pb2.CreateSecretRequest(spec=spec("db"), request_id="r1"), ctx())
        again = await s.CreateSecret(control_pb2.CreateSecretRequest(spec=spec("db"), request_id="r1"), ctx())
        assert again.secret.id == first.secret.id
        dup = await aborted(s.CreateSecret(control_pb2.CreateSecretRequest(spec=spec("db"), request_id="r2"), ctx()))
        assert dup.code == grpc.StatusCode.ALREADY_EXISTS
        assert len(swarm.store.secrets()) == 1

    run(test)


def test_invalid_name_or_missing_spec_changes_nothing() -> None:
    swarm = Swarm()

    async def test() -> None:
        s = control(swarm)
        bad = await aborted(s.CreateSecret(control_pb2.CreateSecretRequest(spec=spec("-bad")), ctx()))
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and bad.details.startswith("invalid name")
        missing = await aborted(s.CreateSecret(control_pb2.CreateSecretRequest(), ctx()))
        assert (missing.code, missing.details) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid argument")
        assert swarm.store.secrets() == [] and swarm.proposer.proposed == []

    run(test)


def test_get_reads_after_a_barrier_and_resolves_names_and_prefixes() -> None:
    swarm = Swarm()
    created = swarm.secret("db")

    async def test() -> None:
        s = control(swarm)
        by_name = await s.GetSecret(control_pb2.GetSecretRequest(secret_id="db"), ctx())
        by_prefix = await s.GetSecret(control_pb2.GetSecretRequest(secret_id=created.id[:4]), ctx())
        assert by_name.secret.id == by_prefix.secret.id == created.id
        assert swarm.proposer.barriers == 2
        gone = await aborted(s.GetSecret(control_pb2.GetSecretRequest(secret_id="nope"), ctx()))
        assert gone.code == grpc.StatusCode.NOT_FOUND
        empty = await aborted(s.GetSecret(control_pb2.GetSecretRequest(), ctx()))
        assert empty.details == "secret ID must be provided"

    run(test)


def test_list_filters_by_name_prefix_id_and_label() -> None:
    swarm = Swarm()
    swarm.secret("db-pass")
    swarm.secret("db-user")
    web = swarm.secret("web")
    swarm.proposer.apply(state.UpdateSecret(rid="l", id=web.id, version=web.version, labels={"tier": "front"}))

    async def names(**filters: Any) -> list[str]:
        req = control_pb2.ListSecretsRequest(filters=control_pb2.ListSecretsRequest.Filters(**filters))
        resp = await control(swarm).ListSecrets(req, ctx())
        return sorted(s.spec.name for s in resp.secrets)

    async def test() -> None:
        assert await names() == ["db-pass", "db-user", "web"]
        assert await names(names=["DB-PASS"]) == ["db-pass"]
        assert await names(name_prefixes=["db-"]) == ["db-pass", "db-user"]
        assert await names(id_prefixes=[web.id[:3]]) == ["web"]
        assert await names(labels={"tier": ""}) == ["web"]
        assert await names(labels={"tier": "back"}) == []

    run(test)


def test_update_changes_labels_only() -> None:
    swarm = Swarm()
    created = swarm.secret("db", b"v1")

    async def test() -> None:
        s = control(swarm)
        ok = await s.UpdateSecret(control_pb2.UpdateSecretRequest(
            secret_id="db", secret_version=objects_pb2.Version(index=created.version),
            spec=spec("db", b"v1", env="prod")), ctx())
        assert dict(ok.secret.spec.labels) == {"env": "prod"}
        for changed in (spec("db", b"v2"), spec("other", b"")):
            err = await aborted(s.UpdateSecret(control_pb2.UpdateSecretRequest(
                secret_id="db", secret_version=objects_pb2.Version(index=ok.secret.version.index), spec=changed),
                ctx()))
            assert (err.code, err.details) == (grpc.StatusCode.INVALID_ARGUMENT, errors.ONLY_LABELS)
        stale = await aborted(s.UpdateSecret(control_pb2.UpdateSecretRequest(
            secret_id="db", secret_version=objects_pb2.Version(index=created.version), spec=spec("db", b"")), ctx()))
        assert stale.kind == errors.UpdateOutOfSequence().kind and stale.details == errors.UPDATE_OUT_OF_SEQUENCE

    run(test)


def test_remove_refuses_a_secret_in_use_and_a_retried_removal_answers_its_first_outcome() -> None:
    swarm = Swarm()
    used = swarm.secret("used")
    swarm.service("web", secrets=(state.SecretRef(secret_id=used.id, secret_name="used", target="used"),))
    free = swarm.secret("free")

    async def test() -> None:
        s = control(swarm)
        in_use = await aborted(s.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id="used"), ctx()))
        assert in_use.code == grpc.StatusCode.INVALID_ARGUMENT and "web" in in_use.details
        await s.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id="free", request_id="rm1"), ctx())
        assert swarm.store.secret(free.id) is None
        # The client did not hear the answer and retries: the same request id, the same (good) outcome.
        await s.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id="free", request_id="rm1"), ctx())
        gone = await aborted(s.RemoveSecret(control_pb2.RemoveSecretRequest(secret_id="free", request_id="rm2"),
                                            ctx()))
        assert gone.code == grpc.StatusCode.NOT_FOUND

    run(test)


def test_a_provider_that_has_no_manager_answers_with_its_typed_error() -> None:
    def provide(context: object) -> ControlAPI:
        raise errors.NotInSwarm()

    async def test() -> None:
        err = await aborted(ControlServicer(provide).ListSecrets(control_pb2.ListSecretsRequest(), ctx()))
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.kind == errors.NotInSwarm().kind
        assert err.details == errors.NotInSwarm().message

    run(test)


def test_a_list_entry_is_the_message_of_the_secret() -> None:
    """Listing writes each secret's wire form directly: it must parse to the message built field by field."""
    cases = [
        state.Secret(id="a" * 25, name="db", data=b"c", key_id="k", created_at=1, updated_at=1, version=1),
        state.Secret(id="b" * 25, name="zé-ñ", data=b"c", key_id="k",
                     labels={"tier": "front", "empty": "", "ü": "v" * 300},
                     created_at=1_700_000_000_123_456_789, updated_at=1_800_000_000_000_000_001, version=2**40),
        state.Secret(id="", name="", data=b"", key_id="", version=0),
    ]
    for s in cases:
        listed = control_pb2.ListSecretsResponse.FromString(list_entry(s))
        assert listed == control_pb2.ListSecretsResponse(secrets=[secret_to_proto(s)])
