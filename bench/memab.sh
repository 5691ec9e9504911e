#!/usr/bin/env bash
# bench/memab.sh: A/B of Doorman's memory per idle IMAP session, two binaries alternated
# in one run (the machine is shared and noisy: compare within the run, take medians).
#
#   bench/memab.sh BEFORE_BIN AFTER_BIN        # e.g. a build of HEAD~1 and of HEAD
#   K=8000 ROUNDS=5 bench/memab.sh A B
#
# For each round and binary: a fresh Doorman (passwd-file passdb, every user proxied to
# bench/fakeimap), 20 warm-up sessions, SIGUSR1 (GC, memory returned, a "memory" log line),
# VmRSS; K idle sessions (LOGIN, SELECT, IDLE) from two imapload processes; settle; VmRSS
# raw, SIGUSR1, VmRSS after GC. Prints per session: the Go heap's live objects (from the
# two memory lines: the most exact figure), RSS raw and RSS after GC.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,12p' "$0"; exit 2; }
BEFORE=$(realpath "$1") AFTER=$(realpath "$2")
K=${K:-4000}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-26001}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/doorman-memab.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
go build -C "$ROOT" -o "$WORK/fakeimap" ./bench/fakeimap
go build -C "$ROOT" -o "$WORK/imapload" ./bench/imapload
for i in $(seq 1 1000); do
	u=$(printf 'u%04d' "$i")
	echo "$u:pw-$u" >>users.txt
	echo "$u:{PLAIN}pw-$u::::::proxy host=127.0.0.1 port=$BASE_PORT" >>users.passwd
done
cat >doorman.yaml <<EOC
listeners:
  - {name: imap, protocol: imap, address: "127.0.0.1:$((BASE_PORT + 1))"}
passdb:
  - {driver: passwd-file, path: users.passwd}
login_trusted_networks: [127.0.0.0/8]
log: {level: warn, format: json}
EOC
rss() { awk '/VmRSS/ {print $2*1024}' "/proc/$1/status"; }
./fakeimap -addr "127.0.0.1:$BASE_PORT" >fake.out 2>&1 &
PIDS+=($!)
sleep 0.5
for round in $(seq 1 "$ROUNDS"); do
	for b in before after; do
		bin=$BEFORE
		[ $b = after ] && bin=$AFTER
		"$bin" -c doorman.yaml >"d-$b.log" 2>&1 &
		dp=$!
		PIDS+=("$dp")
		sleep 1
		./imapload -addr "127.0.0.1:$((BASE_PORT + 1))" -users users.txt -n 20 -hold 1s -progress 0 >/dev/null 2>&1
		sleep 1
		kill -USR1 "$dp"
		sleep 1
		r0=$(rss "$dp")
		loads=()
		for i in 1 2; do
			./imapload -addr "127.0.0.1:$((BASE_PORT + 1))" -users users.txt -n $((K / 2)) -idle -progress 0 \
				-source-ips "127.80.$i.1-127.80.$i.200" >"load-$i.out" 2>&1 &
			loads+=($!)
		done
		for _ in $(seq 1 240); do
			[ "$(ls "/proc/$dp/fd" | wc -l)" -ge $((2 * K)) ] && break
			sleep 0.5
		done
		sleep 3
		r1=$(rss "$dp")
		kill -USR1 "$dp"
		sleep 2
		r2=$(rss "$dp")
		h=($(grep -o '"heap/objects":[0-9]*' "d-$b.log" | cut -d: -f2 | sed -n '1p;$p'))
		h0=${h[0]} h1=${h[1]}
		echo "round $round $b: heap objects $(((h1 - h0) / K)) B/session, RSS raw $(((r1 - r0) / K)) B/session, RSS after GC $(((r2 - r0) / K)) B/session (K=$K, fds $(ls "/proc/$dp/fd" | wc -l))"
		kill -INT "${loads[@]}" 2>/dev/null || true
		wait "${loads[@]}" 2>/dev/null || true
		kill -KILL "$dp"
		wait "$dp" 2>/dev/null || true
		sleep 1
	done
done
