#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus (Tests/Fuzz/corpus/TARGET/): a few valid inputs per target,
built with Google's protobuf runtime from proto/fedcoord.proto, so that libFuzzer starts from
the shapes the readers accept. Run with the test venv: .test/venv/bin/python Tests/Fuzz/make_seeds.py
"""
import importlib, json, os, struct, sys, tempfile
from grpc_tools import protoc

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = tempfile.mkdtemp()
assert protoc.main(["protoc", f"-I{root}/proto", f"--python_out={out}", f"{root}/proto/fedcoord.proto"]) == 0
sys.path.insert(0, out)
pb = importlib.import_module("fedcoord_pb2")
corpus = os.path.join(root, "Tests", "Fuzz", "corpus")


def write(target, name, data):
    with open(os.path.join(corpus, target, name), "wb") as f:
        f.write(data)


def frame(envelope):
    body = envelope.SerializeToString()
    return struct.pack(">BI", 0, len(body)) + body


hello = pb.Envelope(call_id=1, method="/fedcoord.v1.Coordinator/Join", timeout_ms=1000, end_of_stream=True)
hello.hello.protocol_version = 1
ready = pb.Envelope(call_id=3, method="/fedcoord.v1.Coordinator/AnnounceUpdate", end_of_stream=True)
ready.update_ready.round_id, ready.update_ready.example_count, ready.update_ready.train_seconds = 4, 100, 1.5
task = pb.Envelope(call_id=2, method="/fedcoord.v1.Agent/Train")
task.train_task.round_id, task.train_task.tensor_count, task.train_task.log_seq = 1, 1, 9
task.train_task.log_head_sha256 = bytes(32)
status = pb.Envelope(call_id=0)
status.status.code, status.status.message = 8, "too large"
for name, envelope in [("hello", hello), ("update_ready", ready), ("train_task", task), ("status", status)]:
    write("envelope", name, envelope.SerializeToString())
    write("frame", name, frame(envelope))
write("frame", "two", frame(hello) + frame(ready))

header = pb.Envelope(call_id=2)
header.tensor_header.name, header.tensor_header.total_bytes, header.tensor_header.chunk_bytes = "w", 16, 8
header.tensor_header.shape.extend([4])
chunks = []
for offset in (0, 8):
    chunk = pb.Envelope(call_id=2)
    chunk.tensor_chunk.offset = offset
    chunk.tensor_chunk.data = struct.pack("<2f", 0.5, -0.25)
    chunks.append(chunk)
trailer = pb.Envelope(call_id=2)
trailer.tensor_trailer.crc32c = 0
write("tensor", "four_floats", frame(header) + b"".join(frame(c) for c in chunks) + frame(trailer))
write("tensor", "header_only", frame(header))

meta = json.dumps({"__metadata__": {"round": "1"}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
write("safetensors", "w2x2", struct.pack("<Q", len(meta)) + meta + struct.pack("<4f", 1, 2, 3, 4))
# A shape whose byte count overflows 64 bits: once trapped the reader (kept as a regression seed).
meta = json.dumps({"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 16]}}).encode()
write("safetensors", "shape-overflow", struct.pack("<Q", len(meta)) + meta + bytes(16))
write("csv", "rows", b"age,size,label\n34,1.5,0\n51,,1\n\"4,5\",2,1\n")
write("csv", "header", b"age,size,label\n")
write("config", "minimal", json.dumps({
    "tls": {"certificate": "c", "private_key": "k", "ca": "a", "crl": "r"}, "state_dir": "/tmp/x",
    "model": {"tensors": [{"name": "w", "shape": [4]}]}, "update": {"max_abs": 10}, "limits": {"max_connections": 4},
    "selection": {"target": 3, "min_available": 3, "min_updates": 3}}).encode())
with open(os.path.join(root, "Tests", "Fixtures", "rounds-sample.jsonl"), "rb") as f:
    write("roundlog", "sample", f.read())
print("seeds written to", corpus)
