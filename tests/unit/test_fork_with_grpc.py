"""A raft snapshot forks the daemon while gRPC is busy: the fork must not wait for gRPC.

gRPC's fork handlers (on by default) make ``fork()`` wait until gRPC's threads are quiet; a TLS
handshake calls the node's certificate fetcher, Python code that needs the GIL the forking thread
holds, so the fork (and with it the raft loop) stalled for about a minute, or gRPC aborted the
process. The daemon's package turns those handlers off before grpc is imported. The process below
is set up as the daemon is (``swarmsecrets.node`` imported first), serves TLS with a Python
certificate fetcher to clients whose connections the server ages out every 50 ms (so handshakes
never stop), and forks 40 times meanwhile.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# A fork takes milliseconds; a stalled one about a minute. Far from both: a hang, not a speed.
STALLED = 15.0
# Forty healthy forks take seconds even on a loaded machine; one stalled fork takes a minute.
HUNG = 120.0

PROGRAM = textwrap.dedent("""
    import swarmsecrets.node  # what both of the daemon's entry points import first

    import asyncio, datetime, faulthandler, json, os, sys, threading, time
    # A hang shows where every thread of this process stood (the test prints it).
    faulthandler.dump_traceback_later(float(sys.argv[1]), exit=True)
    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())

    def fetch():
        return None  # unchanged, as the node's fetcher answers between renewals; Python under the GIL all the same

    async def serve_and_load(stop):
        # Connections live 50 ms: the clients keep handshaking, and each handshake calls ``fetch``.
        server = grpc.aio.server(options=[("grpc.max_connection_age_ms", 50), ("grpc.max_connection_age_grace_ms", 50)])
        echo = grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"E": echo}),))
        creds = grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)]), fetch)
        port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        client = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        options = [("grpc.use_local_subchannel_pool", 1)]

        async def reconnecting():
            async with grpc.aio.secure_channel(f"localhost:{port}", client, options=options) as ch:
                while not stop.is_set():
                    try:
                        await ch.unary_unary("/t.T/E")(b"x", timeout=30)
                        answered.set()
                    except grpc.aio.AioRpcError:
                        pass

        await asyncio.gather(*(reconnecting() for _ in range(32)))
        await server.stop(0)

    def forker(took):
        answered.wait(60)  # the clients are handshaking by then
        for _ in range(40):
            t = time.monotonic()
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            took.append(time.monotonic() - t)
            os.waitpid(pid, 0)
            time.sleep(0.02)
        print(json.dumps(took), flush=True)
        os._exit(0)  # what is measured is the forks, not gRPC's teardown under load

    answered = threading.Event()
    threading.Thread(target=forker, args=([],), daemon=True).start()
    asyncio.run(serve_and_load(threading.Event()))
""")


def test_a_fork_during_tls_handshakes_does_not_wait_for_grpc() -> None:
    try:
        p = subprocess.run([sys.executable, "-c", PROGRAM, str(HUNG - 20)], capture_output=True, text=True,
                           timeout=HUNG)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the forks did not finish within {HUNG:.0f} s: a fork waited for gRPC") from None
    assert p.returncode == 0, f"the process died (status {p.returncode}): {p.stderr[-6000:]}"
    took = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(took) == 40
    assert max(took) < STALLED, f"a fork stalled for {max(took):.1f} s"
