"""Request ids bound to the request that carries them (see state.bind_request_id).

The binding is a digest, keyed with the data key, of the command kind, the caller and the
request's content. The caller comes from the transport, never from the request: on a manager's
local socket, the swarm's operator (only root may open it; a client may retry on another
manager's socket); on the TLS port, the manager its certificate names; for a joiner, the role
its token grants and its address.
A joiner's content covers its CSR's public key, so whoever replays a join's request id with
another key never gets the certificate of the node that join created. The digest is computed
here, where the command is built, because what the client retries is its request, while the
command differs on each try (fresh object ids, fresh ciphertext); a retry by the same caller with
the same content makes the same id, and gets the first outcome.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf.message import Message

from swarmsecrets import errors, ids, validation
from swarmsecrets.api.v1 import ca_pb2
from swarmsecrets.manager import state
from swarmsecrets.manager.collaborators import Sealer


def bound_request_id(sealer: Sealer, kind: type[state.Command], caller: str, client_rid: str,
                     content: bytes) -> str:
    """The log's request id for ``client_rid`` (a fresh one if empty), made by ``caller``."""
    if client_rid:
        validation.validate_request_id(client_rid)
    if state.client_request_id(client_rid)[1]:  # an id of the log (bound already) is no client's
        raise errors.InvalidArgument(f"invalid request id {client_rid}")
    binding = sealer.digest(b"\0".join((kind.KIND.encode(), caller.encode(), hashlib.sha256(content).digest())))
    return state.bind_request_id(client_rid or ids.new_request_id(), binding)


def control_request_id(sealer: Sealer, kind: type[state.Command], caller: str, request: Message) -> str:
    """The request id of a Control write: its content is the whole request but its id."""
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField("request_id")  # type: ignore[arg-type]  # every Control write has one
    content = request.DESCRIPTOR.full_name.encode() + b"\0" + body.SerializeToString(deterministic=True)
    client_rid: str = request.request_id  # type: ignore[attr-defined]
    return bound_request_id(sealer, kind, caller, client_rid, content)


def join_request_id(sealer: Sealer, role: str, peer_host: str,
                    request: ca_pb2.IssueNodeCertificateRequest) -> str:
    """The request id of a join: the caller is the token's role and the joiner's address; the
    content is what it asks for, with its CSR's public key."""
    try:
        public_key = x509.load_pem_x509_csr(request.csr).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except ValueError:
        raise errors.InvalidArgument("invalid certificate signing request") from None
    body = ca_pb2.IssueNodeCertificateRequest()
    body.CopyFrom(request)
    body.ClearField("request_id")
    body.ClearField("token")
    body.csr = public_key
    return bound_request_id(sealer, state.AddNode, f"join:{role}@{peer_host}", request.request_id,
                            body.SerializeToString(deterministic=True))
