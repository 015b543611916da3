#!/usr/bin/env python3
"""A site's own trainer for FedCoord's "command" trainer kind, with the standard library only.

FedCoord runs it once per round with these environment variables:
  FEDCOORD_GLOBAL_WEIGHTS  the global model (safetensors, float32)
  FEDCOORD_TASK            the task as JSON (round, local_epochs, batch_size, learning_rate, seed,
                           feature_means, feature_scales, data_csv, tensors, ...)
  FEDCOORD_OUTPUT_WEIGHTS  where to write the updated model (safetensors, same names and shapes)
  FEDCOORD_RESULT          where to write {"example_count": N, "loss": x}

It trains logistic regression (layer0.weight [1, F], layer0.bias [1]) with mini-batch SGD on the
site's CSV. For FedCoord's tests, an optional JSON file given as the first argument maps round
numbers to a misbehaviour: "fail", "hang", "shape", "nan", "names", "noresult".
"""
import array, csv, json, math, os, random, struct, sys, time


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    data = blob[8 + length:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        values = array.array("f")
        values.frombytes(data[begin:end])
        tensors[name] = (entry["shape"], list(values))
    return tensors


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        raw = array.array("f", values).tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def main():
    task = json.load(open(os.environ["FEDCOORD_TASK"]))
    modes = json.load(open(sys.argv[1])) if len(sys.argv) > 1 else {}
    mode = modes.get(str(task["round"]), "ok")
    if mode == "fail":
        print("byo_trainer: the GPU is on fire (a deliberate failure)", file=sys.stderr)
        sys.exit(3)
    if mode == "hang":
        time.sleep(600)
    model = read_safetensors(os.environ["FEDCOORD_GLOBAL_WEIGHTS"])
    (w_shape, w), (b_shape, b) = model["layer0.weight"], model["layer0.bias"]
    features = w_shape[1]
    means, scales = task["feature_means"], task["feature_scales"]
    with open(task["data_csv"]) as f:
        reader = csv.reader(f)
        header = next(reader)
        names = [t for t in header if t != "label"][:features]
        columns = [header.index(n) for n in names]
        label = header.index("label")
        rows = [([(float(r[c]) - means[i]) / scales[i] for i, c in enumerate(columns)], float(r[label])) for r in reader]
    rng = random.Random(task["seed"])
    lr, batch = task["learning_rate"], task["batch_size"]
    loss = 0.0
    for _ in range(task["local_epochs"]):
        rng.shuffle(rows)
        loss = 0.0
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            gw, gb = [0.0] * features, 0.0
            for x, y in part:
                z = b[0] + sum(wi * xi for wi, xi in zip(w, x))
                p = 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
                loss += max(z, 0) - z * y + math.log1p(math.exp(-abs(z)))
                for i in range(features):
                    gw[i] += (p - y) * x[i]
                gb += p - y
            w = [wi - lr * g / len(part) for wi, g in zip(w, gw)]
            b = [b[0] - lr * gb / len(part)]
    out = {"layer0.weight": (w_shape, w), "layer0.bias": (b_shape, b)}
    if mode == "shape":
        out["layer0.weight"] = ([features, 1], w)
    if mode == "nan":
        w[3] = float("nan")
    if mode == "names":
        del out["layer0.bias"]
    write_safetensors(os.environ["FEDCOORD_OUTPUT_WEIGHTS"], out)
    if mode != "noresult":
        json.dump({"example_count": len(rows), "loss": loss / len(rows)}, open(os.environ["FEDCOORD_RESULT"], "w"))


if __name__ == "__main__":
    main()
