#!/bin/bash
# The flood scenarios (issue 11 item 5): each run starts a fresh relay on
# loopback, floods it with swload --mode flood for DUR, samples the relay's
# RSS (every 100 ms, from /proc) and its /metrics, and reports the calm
# pair's latency beside the flood. Ends with one summary table.
#
#   bench/flood.sh                      # build bin/switchboard, bin/swload; run the set
#   DUR=5s RUNS="b2p:1 deaf:16" bench/flood.sh
#
# RUNS is a list of scenario:flooders, scenario one of b2p
# (binaries-to-phones), p2b (phones-to-binary) or deaf (deaf-binary); the
# default is "b2p:1 b2p:10 b2p:50 p2b:16 deaf:16". DUR (10s) is each run's
# window, SIZE (204800) the flood message size, MAX_RSS (4GiB) the abort
# cap, RELAY_ARGS extra relay flags (e.g. "--max-input-buffer-bytes 524288"),
# OUT a folder for each run's full output (default a temp folder), NOBUILD=1
# uses bin/ as it is, SWITCHBOARD a relay binary to run instead of
# bin/switchboard. PORT (18480) is the relay's port, PORT+1 its admin port.
#
# Relay and generator share the machine's cores (2 on the usual boxes), so
# the offered rate is what is left to the generator: read the offered and
# delivered MB/s beside the RSS. Every process stays far below the
# 20,000-file limit (b2p:50 is 102 sockets on each side).
set -u
cd "$(dirname "$0")/.."
command -v jq >/dev/null || { echo "flood.sh: needs jq" >&2; exit 2; }
export PATH=$PATH:/usr/local/go/bin
if [ "${NOBUILD:-}" != 1 ]; then
  mkdir -p bin
  go build -o bin/switchboard ./cmd/switchboard || exit 2
  go build -o bin/swload ./cmd/swload || exit 2
fi
DUR=${DUR:-10s}
SIZE=${SIZE:-204800}
MAX_RSS=${MAX_RSS:-4GiB}
PORT=${PORT:-18480}
ADMIN=$((PORT + 1))
RUNS=${RUNS:-"b2p:1 b2p:10 b2p:50 p2b:16 deaf:16"}
OUT=${OUT:-$(mktemp -d /tmp/flood.XXXXXX)}
mkdir -p "$OUT"
echo "flood.sh: $(git describe --always --dirty 2>/dev/null), nproc $(nproc), DUR $DUR, SIZE $SIZE, outputs in $OUT"

relay=""
stop_relay() {
  [ -n "$relay" ] || return
  kill "$relay" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$relay" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$relay" 2>/dev/null
  wait "$relay" 2>/dev/null
  relay=""
}
trap stop_relay EXIT

results=()
for r in $RUNS; do
  short=${r%%:*}; n=${r##*:}
  case $short in
    b2p) scen=binaries-to-phones ;;
    p2b) scen=phones-to-binary ;;
    deaf) scen=deaf-binary ;;
    *) echo "flood.sh: unknown scenario $short" >&2; exit 2 ;;
  esac
  name="$scen-$n"
  # shellcheck disable=SC2086
  "${SWITCHBOARD:-bin/switchboard}" --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$ADMIN --rate-limit-burst 0 \
    --log-level warn ${RELAY_ARGS:-} 2>"$OUT/$name.relay.log" &
  relay=$!
  up=""
  for _ in $(seq 1 50); do
    if curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$relay" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "flood.sh: $name: the relay did not start:"; sed 's/^/  /' "$OUT/$name.relay.log"
    stop_relay
    results+=("$name relay-failed")
    continue
  fi
  echo "== $name (relay pid $relay)"
  bin/swload --mode flood --scenario "$scen" --flooders "$n" --size "$SIZE" --duration "$DUR" \
    --addr 127.0.0.1:$PORT --relay-pid "$relay" --max-rss "$MAX_RSS" \
    --metrics-url "http://127.0.0.1:$ADMIN/metrics" --progress 2s >"$OUT/$name.out" 2>"$OUT/$name.err"
  rc=$?
  stop_relay
  grep -v '^SWLOAD_RESULT ' "$OUT/$name.out"
  echo "   exit $rc"
  line=$(grep '^SWLOAD_RESULT ' "$OUT/$name.out" | cut -d' ' -f2-)
  if [ -z "$line" ]; then
    tail -5 "$OUT/$name.err"
    results+=("$name no-result")
    continue
  fi
  results+=("$name $(echo "$line" | jq -r --arg rc $rc '[
      (.flood.rss.peak_bytes/1048576|floor),
      (if .flood.metrics.buffered_bytes_peak < 0 then "n/a" else (.flood.metrics.buffered_bytes_peak/1048576*10|floor/10) end),
      (.flood.offered_mb_per_s|floor), (.flood.delivered_mb_per_s|floor),
      (.flood.calm.p50_us/1000*100|floor/100), (.flood.calm.p99_us/1000*100|floor/100), (.flood.calm.max_us/1000*100|floor/100),
      "\(.flood.calm.lost)/\(.flood.calm.late)",
      (.flood.flooder_disconnects|to_entries|map("\(.key)=\(.value)")|join(",")|if .=="" then "-" else . end),
      (.flood.receiver_disconnects|to_entries|map("\(.key)=\(.value)")|join(",")|if .=="" then "-" else . end),
      .flood.metrics.read_pauses_total,
      (if .flood.aborted then "ABORTED" else $rc end)] | map(tostring) | join(" ")')")
done

echo
echo "summary (RSS and buffered in MiB, rates in MB/s, calm latency in ms)"
{
  echo "run peak_rss buffered_peak offered delivered calm_p50 calm_p99 calm_max calm_lost/late flooder_disc receiver_disc read_pauses exit"
  for l in "${results[@]}"; do echo "$l"; done
} | column -t
