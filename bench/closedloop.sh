#!/bin/bash
# Closed-loop relay CPU per round trip, Switchboard and the baseline
# interleaved, each relay pinned to RELAY_CPUS and swload to GEN_CPUS.
# Needs no Go toolchain where it runs: BIN is a folder with switchboard,
# baseline-relay and swload built for that machine, e.g.
#   mkdir -p /tmp/sb && for c in switchboard baseline-relay swload; do go build -o /tmp/sb/$c ./cmd/$c; done
#   BIN=/tmp/sb RELAY_CPUS=0-7 GEN_CPUS=8-15 bench/closedloop.sh
# ROUNDS (3) and DUR (8s) set the repeats and each run's length; OUT, if
# set, gets a copy of the results.
set -u
cd "${BIN:?set BIN to the folder with the three binaries}"
[ -n "${OUT:-}" ] && exec > >(tee "$OUT/results.txt") 2>&1
command -v taskset >/dev/null || { echo "no taskset: unpinned"; taskset() { shift 2; "$@"; }; }
metrics() { exec 3<>/dev/tcp/127.0.0.1/$1; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3; exec 3<&-; }
echo "nproc $(nproc) ulimit $(ulimit -n)"; ulimit -n 65536 2>/dev/null; echo "ulimit now $(ulimit -n)"
port=20000
run() { # impl inflight phones dur
  port=$((port+1))
  if [ $1 = SB ]; then
    taskset -c ${RELAY_CPUS:-0-7} ./switchboard --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port+5000)) --log-level warn --max-connections 60000 --rate-limit-burst 0 &
  else
    taskset -c ${RELAY_CPUS:-0-7} ./baseline-relay --listen 127.0.0.1:$port --admin-listen "" --claim-before-upgrade --log-level warn &
  fi
  pid=$!; sleep 0.7
  taskset -c ${GEN_CPUS:-8-15} ./swload --mode active --addr 127.0.0.1:$port --phones $3 --inflight $2 --duration $4 --progress 100s > /tmp/o.txt 2>&1
  t=$(awk '{print $14+$15}' /proc/$pid/stat)
  rt=$(grep -o '"round_trips":[0-9]*' /tmp/o.txt | cut -d: -f2)
  ff=""
  if [ $1 = SB ]; then m=$(metrics $((port+5000))); fl=$(echo "$m" | awk '/^switchboard_flushes_total/{print $2}'); fr=$(echo "$m" | awk '/^switchboard_frames_flushed_total/{print $2}'); ff="frames/flush=$(awk -v a=$fr -v b=$fl 'BEGIN{printf "%.2f", a/b}')"; fi
  kill $pid; wait $pid 2>/dev/null
  echo "$1 inflight=$2 phones=$3 cpu_us_per_rt=$(awk -v t=$t -v r=$rt 'BEGIN{printf "%.2f", t*10000/r}') rt_per_s=$((rt/${4%s})) $ff $(grep -o '"p99":[0-9.]*' /tmp/o.txt | head -1)"
}
for r in $(seq 1 ${ROUNDS:-3}); do
  for impl in SB BL; do run $impl 1 1024 ${DUR:-8s}; run $impl 16 1024 ${DUR:-8s}; done
done
