"""Secrets: create (sealed with the data key before it enters the log), inspect, list,
update (labels only, as Swarm), remove."""

from __future__ import annotations

import hmac

from swarmsecrets import errors, ids, validation
from swarmsecrets.api.v1 import control_pb2, objects_pb2
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Proposer, Sealer, StoreReader
from swarmsecrets.manager.controlapi.common import request_id, resolve_for_removal
from swarmsecrets.rpcutil import format_ts


def secret_to_proto(s: state.Secret) -> objects_pb2.Secret:
    return objects_pb2.Secret(
        id=s.id, version=objects_pb2.Version(index=s.version),
        created_at=format_ts(s.created_at), updated_at=format_ts(s.updated_at),
        spec=objects_pb2.SecretSpec(name=s.name, labels=s.labels),
    )


def matches(f: control_pb2.ListSecretsRequest.Filters, s: state.Secret) -> bool:
    """SwarmKit's ListSecrets: a secret is selected by any of its names (exact), name prefixes or
    ID prefixes (OR'd; names are matched case-insensitively, as its name index does), and must then
    carry every label asked for (a key alone asks for the key, ``key=value`` for the value)."""
    if not (f.names or f.name_prefixes or f.id_prefixes or f.labels):
        return True
    name = s.name.lower()
    if (f.names or f.name_prefixes or f.id_prefixes) and not (
            any(name == n.lower() for n in f.names)
            or any(name.startswith(p.lower()) for p in f.name_prefixes)
            or any(s.id.startswith(p) for p in f.id_prefixes)):
        return False
    return all(k in s.labels and (not v or s.labels[k] == v) for k, v in f.labels.items())


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _field(tag: bytes, value: bytes) -> bytes:
    """A length-delimited field (string, bytes or message) with its ``tag`` byte."""
    return tag + _varint(len(value)) + value


def list_entry(s: state.Secret) -> bytes:
    """``s`` as one entry of a ``ListSecretsResponse`` (field 1, ``Secret``), in wire format:
    the bytes ``secret_to_proto(s)`` serializes to, written directly (a message built per secret
    costs several microseconds, most of a second for a full list of a hundred thousand secrets)."""
    spec = _field(b"\x0a", s.name.encode()) if s.name else b""
    for k, v in s.labels.items():
        spec += _field(b"\x12", _field(b"\x0a", k.encode()) + _field(b"\x12", v.encode()))
    created = format_ts(s.created_at)
    updated = created if s.updated_at == s.created_at else format_ts(s.updated_at)
    body = b"".join((
        _field(b"\x0a", s.id.encode()) if s.id else b"",
        _field(b"\x12", b"\x08" + _varint(s.version) if s.version else b""),
        _field(b"\x1a", created.encode()), _field(b"\x22", updated.encode()),
        _field(b"\x2a", spec),
    ))
    return _field(b"\x0a", body)


class SecretsAPI:
    def __init__(self, store: StoreReader, proposer: Proposer, sealer: Sealer) -> None:
        self.store = store
        self.proposer = proposer
        self.sealer = sealer

    async def create_secret(self, request: control_pb2.CreateSecretRequest,
                            caller: str) -> control_pb2.CreateSecretResponse:
        if not request.HasField("spec"):
            raise errors.InvalidArgument("invalid argument")
        spec = request.spec
        validation.validate_secret_name(spec.name)
        validation.validate_secret_data(spec.data)
        validation.validate_labels(spec.labels)
        key = self.sealer.current()
        created = await self.proposer.propose(state.CreateSecret(
            rid=request_id(self.sealer, state.CreateSecret, caller, request), id=ids.new_id(),
            name=spec.name, labels=dict(spec.labels), data=key.seal(spec.data), key_id=key.key_id))
        return control_pb2.CreateSecretResponse(secret=secret_to_proto(created))

    async def get_secret(self, request: control_pb2.GetSecretRequest) -> control_pb2.GetSecretResponse:
        if not request.secret_id:
            raise errors.InvalidArgument("secret ID must be provided")
        await self.proposer.barrier()
        return control_pb2.GetSecretResponse(secret=secret_to_proto(self.store.resolve_secret(request.secret_id)))

    async def list_secrets(self, request: control_pb2.ListSecretsRequest) -> control_pb2.ListSecretsResponse:
        f = request.filters
        for what, values in (("name filters", f.names), ("name prefix filters", f.name_prefixes),
                             ("ID prefix filters", f.id_prefixes), ("label filters", f.labels)):
            validation.validate_list_length(what, len(values), validation.MAX_FILTER_VALUES)
        await self.proposer.barrier()
        # One parse (in C) of the entries written directly, rather than a message built per secret.
        return control_pb2.ListSecretsResponse.FromString(
            b"".join([list_entry(s) for s in self.store.secrets() if matches(f, s)]))

    async def update_secret(self, request: control_pb2.UpdateSecretRequest,
                            caller: str) -> control_pb2.UpdateSecretResponse:
        if not request.secret_id or not request.HasField("secret_version") or not request.HasField("spec"):
            raise errors.InvalidArgument("invalid argument")
        await self.proposer.barrier()
        current = self.store.resolve_secret(request.secret_id)
        spec = request.spec
        if spec.name != current.name or (
            spec.data and not hmac.compare_digest(spec.data, self.sealer.unseal(current.data))
        ):
            raise errors.InvalidArgument(errors.ONLY_LABELS)
        validation.validate_labels(spec.labels)
        updated = await self.proposer.propose(state.UpdateSecret(
            rid=request_id(self.sealer, state.UpdateSecret, caller, request), id=current.id,
            version=request.secret_version.index,
            labels=dict(spec.labels)))
        return control_pb2.UpdateSecretResponse(secret=secret_to_proto(updated))

    async def remove_secret(self, request: control_pb2.RemoveSecretRequest,
                            caller: str) -> control_pb2.RemoveSecretResponse:
        if not request.secret_id:
            raise errors.InvalidArgument("secret ID must be provided")
        rid = request_id(self.sealer, state.RemoveSecret, caller, request)
        await self.proposer.barrier()
        secret_id = resolve_for_removal(self.store, self.store.resolve_secret, request.secret_id, rid)
        await self.proposer.propose(state.RemoveSecret(rid=rid, id=secret_id))
        return control_pb2.RemoveSecretResponse()
