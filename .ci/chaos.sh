#!/usr/bin/env bash
# make chaos: a federation of five agents and a coordinator in a network namespace of its own,
# whose loopback drops CHAOS_LOSS of its packets at random (iptables) and is rate-limited
# (tc tbf: queueing delay), while the coordinator and the agents are SIGKILLed at random moments
# and restarted, until CHAOS_ROUNDS rounds are committed. Then: every round is in the log once,
# `fedcoord rounds verify` passes, and the model equals an independent replay of the round log.
# Root only (network namespaces). Nothing leaves the namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${CHAOS_ROUNDS:-50}
LOSS=${CHAOS_LOSS:-0.03}
RATE=${CHAOS_RATE:-200mbit}
BIN=${BIN:-.build/release}
LIMIT=${CHAOS_SECONDS:-900}
command -v ip >/dev/null && command -v iptables >/dev/null || bash .ci/install-deps.sh iproute2 iptables
[[ $(id -u) -eq 0 ]] || { echo "make chaos needs root (it creates a network namespace)"; exit 2; }

work=$(mktemp -d /tmp/fedchaos-XXXXXX)
ns="fedchaos-$$"
pids=()
cleanup() {
    for pid in $(jobs -p); do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" iptables -A INPUT -m statistic --mode random --probability "$LOSS" -j DROP
ip netns exec "$ns" tc qdisc add dev lo root tbf rate "$RATE" burst 256kb latency 20ms

"$BIN/fedcoord" certs dev --out "$work/certs" > /dev/null
port=7443
cat > "$work/coordinator.json" <<JSON
{
  "listen": {"host": "127.0.0.1", "port": $port},
  "tls": {"certificate": "$work/certs/coordinator.crt", "private_key": "$work/certs/coordinator.key",
          "ca": "$work/certs/ca.crt", "crl": "$work/certs/crl.pem"},
  "state_dir": "$work/state",
  "model": {"tensors": [{"name": "w", "shape": [256, 64]}, {"name": "b", "shape": [64]}], "init": "zeros"},
  "rounds": $ROUNDS,
  "selection": {"target": 4, "min_available": 3, "min_updates": 2, "round_deadline_seconds": 4,
                "selection_timeout_seconds": 1, "collect_grace_seconds": 4, "failure_backoff_seconds": 1, "max_retries": 5},
  "secure_aggregation": {"enabled": false},
  "heartbeat_interval_seconds": 0.5
}
JSON
sites=(hospital-a hospital-b hospital-c hospital-d hospital-e)
for i in "${!sites[@]}"; do
    site=${sites[$i]}
    cat > "$work/$site.json" <<JSON
{
  "coordinator": {"host": "localhost", "port": $port},
  "tls": {"certificate": "$work/certs/$site.crt", "private_key": "$work/certs/$site.key", "ca": "$work/certs/ca.crt"},
  "trainer": {"kind": "benchmark", "examples": $((10 * (i + 1))), "step": 0.00$((i + 1)), "delay_seconds": 0.8, "delay_jitter_seconds": 0.4},
  "heartbeat_interval_seconds": 0.5, "reconnect_initial_seconds": 0.2, "reconnect_max_seconds": 1,
  "witness_file": "$work/$site.witness.jsonl"
}
JSON
done

committed() {
    local n
    n=$(grep -c '"status":"committed"' "$work/state/rounds.jsonl" 2>/dev/null) || true
    echo "${n:-0}"
}
# `ip netns exec` execs the command: $! is the coordinator's or agent's own pid.
start_coordinator() {
    ip netns exec "$ns" "$BIN/fedcoord" serve --config "$work/coordinator.json" --log-level warning > /dev/null 2>> "$work/coordinator.log" &
    coordinator=$!
}
start_agent() {
    ip netns exec "$ns" "$BIN/fedagent" run --config "$work/${sites[$1]}.json" --log-level warning > /dev/null 2>> "$work/${sites[$1]}.log" &
    agent[$1]=$!
}
declare -a agent
start_coordinator
for i in "${!sites[@]}"; do start_agent "$i"; done

coordinator_kills=0; agent_kills=0; started=$SECONDS
echo "chaos: $ROUNDS rounds, ${#sites[@]} agents, loopback in namespace $ns dropping $LOSS of packets at random, rate $RATE"
while (( $(committed) < ROUNDS )); do
    (( SECONDS - started < LIMIT )) || { echo "chaos: only $(committed) of $ROUNDS rounds in $LIMIT s"; exit 1; }
    sleep "$(python3 -c 'import random; print(round(random.uniform(1.0, 3.0), 2))')"
    (( $(committed) < ROUNDS )) || break
    if (( RANDOM % 10 < 3 )); then
        if kill -9 "$coordinator" 2>/dev/null; then coordinator_kills=$((coordinator_kills + 1)); fi
        wait "$coordinator" 2>/dev/null || true
        sleep "$(python3 -c 'import random; print(round(random.uniform(0.2, 1.5), 2))')"
        (( $(committed) < ROUNDS )) && start_coordinator
    else
        i=$((RANDOM % ${#sites[@]}))
        if kill -9 "${agent[$i]}" 2>/dev/null; then agent_kills=$((agent_kills + 1)); fi
        wait "${agent[$i]}" 2>/dev/null || true
        sleep "$(python3 -c 'import random; print(round(random.uniform(0.2, 2.0), 2))')"
        start_agent "$i"
    fi
    # A coordinator that finished its rounds exits 0; one that died otherwise is restarted.
    if ! kill -0 "$coordinator" 2>/dev/null && (( $(committed) < ROUNDS )); then start_coordinator; fi
done
wait "$coordinator" 2>/dev/null || true
seconds=$((SECONDS - started))
dropped=$(ip netns exec "$ns" iptables -L INPUT -v -n -x | awk 'NR==3 {print $1}')

"$BIN/fedcoord" rounds verify --state "$work/state" $(for s in "${sites[@]}"; do echo --witness "$work/$s.witness.jsonl"; done)
python3 - "$work/state" "$ROUNDS" <<'PY'
import json, struct, sys
state, rounds = sys.argv[1], int(sys.argv[2])
records = [json.loads(line) for line in open(state + "/rounds.jsonl")]
committed = [r for r in records if r["type"] == "round" and r.get("status") == "committed"]
numbers = [r["round"] for r in committed]
assert numbers == list(range(1, rounds + 1)), f"rounds committed {numbers}"
steps = {f"hospital-{c}": 0.001 * (i + 1) for i, c in enumerate("abcde")}
count = 256 * 64 + 64
# The benchmark trainer's delta: step × (1 + i mod 7). FedAvg at learning rate 1: model += weighted mean.
model = [0.0] * count
import array
for r in committed:
    weights = r["examples"]
    total = sum(weights.values())
    scale = sum(weights[a] * steps[a] for a in weights) / total
    model = [struct.unpack("f", struct.pack("f", m + scale * (1 + i % 7)))[0] for i, m in enumerate(model)]
data = open(f"{state}/checkpoints/model-{rounds:06d}.safetensors", "rb").read()
header = struct.unpack("<Q", data[:8])[0]
values = array.array("f", data[8 + header:])
error = max(abs(a - b) for a, b in zip(values, model))
assert len(values) == count and error <= 1e-5 * max(1.0, max(abs(v) for v in model)), f"max abs error {error}"
print(f"replay: {rounds} rounds, each committed once; model equals the independent replay (max abs error {error:.2e})")
PY
echo "chaos: $ROUNDS rounds in $seconds s; $coordinator_kills coordinator kills, $agent_kills agent kills; $dropped packets dropped (loss $LOSS, rate $RATE); log verified with the sites' witnesses; model equals the replay"
