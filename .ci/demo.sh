#!/usr/bin/env bash
# make demo: synthetic data for five hospitals, then a coordinator and five agents on loopback over
# mutually authenticated TLS 1.3 training a readmission model (logistic regression, FedAvg, federated
# standardization, federated evaluation every round) under secure aggregation (FLSECAGG-v1: the
# coordinator sees only the sum of the survivors' updates); one hospital is slow enough to straggle
# in some rounds, and its masks are recovered from the others' shares. Ends with the round table.
# Expects the release build and certs/dev (the Makefile makes both first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/release
DEMO=.demo
ROUNDS=${ROUNDS:-15}
rm -rf "$DEMO"
mkdir -p "$DEMO/logs"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
CERTS=$PWD/certs/dev

echo "== synthetic hospitals: 5 sites × 2000 patients, non-IID (fedagent synth)"
$BIN/fedagent synth --sites 5 --rows 2000 --seed 7 --out "$DEMO/data" > "$DEMO/logs/synth.txt"
FEATURES='["age", "sex", "bmi", "systolic_bp", "glucose", "cholesterol", "smoker", "prior_admissions", "length_of_stay"]'

cat > "$DEMO/coordinator.json" <<JSON
{
  "listen": {"host": "127.0.0.1", "port": $PORT},
  "tls": {"certificate": "$CERTS/coordinator.crt", "private_key": "$CERTS/coordinator.key",
          "ca": "$CERTS/ca.crt", "crl": "$CERTS/crl.pem"},
  "state_dir": "$PWD/$DEMO/state",
  "federation": "demo",
  "model": {"kind": "logistic", "features": $FEATURES, "label": "readmitted_30d", "standardize": true},
  "task": {"local_epochs": 1, "batch_size": 32, "learning_rate": 0.05},
  "evaluation": {"every": 1, "timeout_seconds": 10},
  "secure_aggregation": {"enabled": true, "max_dropout_fraction": 0.3, "keys_timeout_seconds": 5, "unmask_timeout_seconds": 5},
  "rounds": $ROUNDS,
  "selection": {"target": 5, "overselect": 1.0, "min_available": 4, "min_updates": 3,
                "round_deadline_seconds": 2.0, "selection_timeout_seconds": 1.0, "collect_grace_seconds": 5,
                "max_retries": 2, "failure_backoff_seconds": 5, "seed": 42},
  "optimizer": {"kind": "fedavg", "learning_rate": 1.0},
  "heartbeat_interval_seconds": 1
}
JSON

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== coordinator on 127.0.0.1:$PORT, $ROUNDS rounds, state in $DEMO/state (logs in $DEMO/logs)"
$BIN/fedcoord serve --config "$DEMO/coordinator.json" 2> "$DEMO/logs/coordinator.log" &
coordinator=$!
pids+=("$coordinator")

i=0
for site in hospital-a hospital-b hospital-c hospital-d hospital-e; do
    i=$((i + 1))
    delay=0.1; jitter=0.3
    if [[ $site == hospital-e ]]; then delay=1.0; jitter=2.5; fi   # the straggler
    cat > "$DEMO/$site.json" <<JSON
{
  "coordinator": {"host": "localhost", "port": $PORT},
  "tls": {"certificate": "$CERTS/$site.crt", "private_key": "$CERTS/$site.key", "ca": "$CERTS/ca.crt"},
  "trainer": {"kind": "local", "delay_seconds": $delay, "delay_jitter_seconds": $jitter},
  "data": {"csv": "$PWD/$DEMO/data/site$i.csv", "holdout_fraction": 0.2},
  "heartbeat_interval_seconds": 1
}
JSON
    $BIN/fedagent run --config "$DEMO/$site.json" 2> "$DEMO/logs/$site.log" &
    pids+=("$!")
done
echo "== 5 agents started, each on its own site's CSV (hospital-e is slow: it straggles in some rounds)"

status=0
wait "$coordinator" || status=$?
if [[ $status -ne 0 ]]; then
    echo "the coordinator exited with status $status; its log:" >&2
    tail -20 "$DEMO/logs/coordinator.log" >&2
    exit "$status"
fi
cleanup
pids=()
echo
$BIN/fedcoord rounds --state "$DEMO/state"
echo
# The hash chain, and the heads each hospital was shown (its witness file, beside its agent.json).
$BIN/fedcoord rounds verify --state "$DEMO/state" $(for site in hospital-a hospital-b hospital-c hospital-d hospital-e; do echo --witness "$DEMO/$site.witness.jsonl"; done)
echo "Round log: $DEMO/state/rounds.jsonl   checkpoints (safetensors): $DEMO/state/checkpoints/"
echo "Accuracy and AUC: the global model after each round on the sites' 20 % holdouts (AUC: example-weighted mean of site AUCs)."
echo "Secure aggregation: 'survivors' are the sites whose masked updates were summed; 'recovered' the stragglers whose masks were removed with their neighbours' shares."
