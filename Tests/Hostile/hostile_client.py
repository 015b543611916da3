#!/usr/bin/env python3
"""A hostile FedCoord peer that speaks the wire from outside the project.

Its messages are built with Google's protobuf runtime from proto/fedcoord.proto (compiled at run
time with grpcio-tools), its frames by hand, over Python's own TLS. It plays a hospital with a
valid certificate that lies, and a stranger without one, against a running coordinator, and
prints one JSON object: each attack, what the coordinator answered, and whether that is the
refusal expected. It never targets anything but the host and port it is given (loopback).

usage: hostile_client.py --host 127.0.0.1 --port P --ca CA --cert CERT --key KEY --proto DIR
"""
import argparse, importlib, json, math, os, socket, ssl, struct, subprocess, sys, tempfile, threading, time

OK, INVALID_ARGUMENT, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION = 0, 3, 4, 8, 9


def compile_proto(proto_dir):
    out = tempfile.mkdtemp(prefix="fedcoord-proto-")
    from grpc_tools import protoc
    if protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", os.path.join(proto_dir, "fedcoord.proto")]) != 0:
        sys.exit("protoc failed on fedcoord.proto")
    sys.path.insert(0, out)
    return importlib.import_module("fedcoord_pb2")


class Peer:
    """One mTLS connection: frames out, a reader thread routing frames to calls, heartbeats."""

    def __init__(self, args, pb, cert=True, join=True, serve_tasks=True):
        self.pb, self.args = pb, args
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_verify_locations(args.ca)
        if cert:
            context.load_cert_chain(args.cert, args.key)
        raw = socket.create_connection((args.host, args.port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.lock = threading.Lock()
        self.replies, self.closed, self.next_id = {}, False, 1
        self.tasks = []
        self.serve_tasks = serve_tasks
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if join:
            hello = pb.Envelope(call_id=self._id(), method="/fedcoord.v1.Coordinator/Join", timeout_ms=10000, end_of_stream=True)
            hello.hello.protocol_version = 1
            hello.hello.software_version = "hostile 1"
            self.welcome = self.call(hello)
            threading.Thread(target=self._beat, daemon=True).start()

    def _id(self):
        with self.lock:
            i = self.next_id
            self.next_id += 2
            return i

    def send_raw(self, data):
        with self.lock:
            self.sock.sendall(data)

    def send(self, envelope):
        body = envelope.SerializeToString()
        self.send_raw(struct.pack(">BI", 0, len(body)) + body)

    def _read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _read(self):
        try:
            while True:
                flags, length = struct.unpack(">BI", self._read_exact(5))
                envelope = self.pb.Envelope()
                envelope.ParseFromString(self._read_exact(length))
                if envelope.call_id % 2 == 0 and envelope.call_id != 0:
                    self._serve(envelope)
                    continue
                with self.lock:
                    self.replies.setdefault(envelope.call_id, []).append(envelope)
        except Exception:
            pass
        with self.lock:
            self.closed = True

    def _serve(self, envelope):
        """Calls the coordinator opens: keep each task, read its model to the end, answer OK."""
        if envelope.method.endswith("/Train"):
            self.tasks.append(envelope.train_task)
        if envelope.end_of_stream:
            self._answer(envelope.call_id)

    def _answer(self, call_id):
        reply = self.pb.Envelope(call_id=call_id)
        reply.status.code = OK
        reply.empty.SetInParent()
        try:
            self.send(reply)
        except OSError:
            pass

    def _beat(self):
        sequence = 0
        while not self.closed:
            sequence += 1
            beat = self.pb.Envelope(call_id=0)
            beat.heartbeat.sequence = sequence
            try:
                self.send(beat)
            except OSError:
                return
            time.sleep(0.3)

    def call(self, envelope, timeout=15):
        """Sends one envelope (a whole unary request) and waits for its status."""
        if not envelope.call_id:
            envelope.call_id = self._id()
        self.send(envelope)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                for reply in self.replies.get(envelope.call_id, []):
                    if reply.HasField("status"):
                        return reply.status.code, reply.status.message
                if self.closed:
                    return None, "closed"
            time.sleep(0.01)
        return None, "no answer"

    def wait_closed(self, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            with self.lock:
                if self.closed:
                    return True
            time.sleep(0.05)
        return False

    def close(self):
        # Shut down first and let the reader thread end: closing under it would let the next
        # socket reuse the descriptor while this SSL object still reads from it.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.reader.join(timeout=5)
        try:
            self.sock.close()
        except OSError:
            pass


def announce(peer, round_id, version, examples=10, **fields):
    envelope = peer.pb.Envelope(method="/fedcoord.v1.Coordinator/AnnounceUpdate", timeout_ms=20000, end_of_stream=True)
    ready = envelope.update_ready
    ready.round_id, ready.model_version, ready.example_count = round_id, version, examples
    for key, value in fields.items():
        setattr(ready, key, value)
    return peer.call(envelope, timeout=25)


def main():
    parser = argparse.ArgumentParser()
    for name in ["host", "ca", "cert", "key", "proto"]:
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("this client only targets loopback")
    pb = compile_proto(args.proto)
    results = []

    def record(name, expected, got, detail=""):
        results.append({"attack": name, "held": bool(expected), "answer": str(got), "detail": detail[:300]})

    # A hospital with a valid certificate that lies about its update.
    site = Peer(args, pb)
    deadline = time.time() + 30
    while not site.tasks and time.time() < deadline:
        time.sleep(0.05)
    if not site.tasks:
        print(json.dumps({"error": "the hostile site was never selected", "results": results}))
        return 1
    task = site.tasks[-1]
    code, message = announce(site, task.round_id, task.model_version, train_seconds=math.nan)
    record("nan_train_seconds", code == INVALID_ARGUMENT, code, message)
    for examples in (2 ** 63, 2 ** 40, 2 ** 64 - 1):
        while len(site.tasks) < 1 or site.tasks[-1].round_id == task.round_id:
            if time.time() > deadline + 60:
                break
            time.sleep(0.05)
        task = site.tasks[-1]
        code, message = announce(site, task.round_id, task.model_version, examples=examples)
        record(f"example_count_{examples}", code == INVALID_ARGUMENT, code, message)
    code, message = announce(site, task.round_id + 1000, task.model_version, failure="x\n\x1b[2J" * (1 << 19))
    record("failure_4mib_control_chars", code in (OK, INVALID_ARGUMENT, FAILED_PRECONDITION), code, message)

    # Many calls on one connection: the ones past the limit answered at once.
    envelopes = []
    for _ in range(300):
        envelope = pb.Envelope(call_id=site._id(), method="/fedcoord.v1.Coordinator/AnnounceUpdate", timeout_ms=5000)
        envelope.update_ready.round_id = 0
        envelopes.append(envelope)
    for envelope in envelopes:
        site.send(envelope)
    time.sleep(2)
    with site.lock:
        codes = [r.status.code for e in envelopes for r in site.replies.get(e.call_id, []) if r.HasField("status")]
    record("300_calls_one_connection", len(codes) == 300 and RESOURCE_EXHAUSTED in codes, f"{len(codes)} answered",
           f"{codes.count(RESOURCE_EXHAUSTED)} RESOURCE_EXHAUSTED")
    site.close()

    # Garbage and oversized frames: the connection is closed, with a status when it can be.
    for name, payload in [("garbage_frame", struct.pack(">BI", 0, 12) + b"\xff" * 12),
                          ("oversized_frame", struct.pack(">BI", 0, 0x7FFFFFFF)),
                          ("compressed_flag", struct.pack(">BI", 1, 2) + b"\x08\x01")]:
        peer = Peer(args, pb)
        peer.send_raw(payload)
        record(name, peer.wait_closed(5), "closed" if peer.closed else "open")
        peer.close()

    # Connections that finish the handshake and never Join are cut at the join deadline.
    silent = [Peer(args, pb, join=False) for _ in range(60)]
    cut = sum(1 for peer in silent if peer.wait_closed(15))
    record("60_never_join", cut == 60, f"{cut} cut")
    for peer in silent:
        peer.close()

    # Connect-and-close cycles (descriptors must come back).
    cycles, errors = 0, []
    for _ in range(300):
        try:
            Peer(args, pb, join=False).close()
            cycles += 1
        except OSError as error:
            errors.append(repr(error))
    record("300_connect_close", cycles == 300, f"{cycles} cycles", "; ".join(sorted(set(errors)))[:300])

    # A stranger without a certificate, many times.
    refused = 0
    for _ in range(200):
        try:
            peer = Peer(args, pb, cert=False, join=False)
            refused += peer.wait_closed(5)
            peer.close()
        except (ssl.SSLError, OSError):
            refused += 1
    record("200_handshakes_without_certificate", refused == 200, f"{refused} refused")

    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
