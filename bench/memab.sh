#!/usr/bin/env bash
# bench/memab.sh: A/B of Doorman's memory per idle IMAP session, two binaries (or two
# environments for one binary) alternated in one run (the machine is shared and noisy:
# compare within the run, take medians).
#
#   bench/memab.sh BEFORE_BIN AFTER_BIN        # e.g. a build of HEAD~1 and of HEAD
#   K=8000 ROUNDS=5 bench/memab.sh A B
#   TLS=1 bench/memab.sh A B                   # implicit-TLS sessions (imaps)
#   A_ENV="" B_ENV="GOGC=50" bench/memab.sh BIN BIN
#
# For each round and binary: a fresh Doorman (passwd-file passdb, every user proxied to
# bench/fakeimap), 20 warm-up sessions, SIGUSR1 (GC, memory returned, a "memory" log line),
# VmRSS; K idle sessions (LOGIN, SELECT, IDLE) from two imapload processes; SETTLE seconds
# [5] once all are set up (Doorman's memory trim, memory_trim_interval, comes 2-2.5 s after
# a burst); VmRSS raw, SIGUSR1, VmRSS after GC. Prints per session: the Go heap's live
# objects (from the two memory lines: the most exact figure), RSS raw and RSS after GC;
# then the medians of each side. With TLS=1 the sessions use implicit TLS (a full TLS 1.3
# handshake each, the certificate verified, no session cache) on a listener with
# tools/devcert's test certificate. LOG_LEVEL [warn]: Doorman's log level (debug: each
# round also counts the memory trims its Doorman logged). BASE_PORT [26001] and the next
# two; KEEP=1 keeps the work folder.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,21p' "$0"; exit 2; }
BEFORE=$(realpath "$1") AFTER=$(realpath "$2")
K=${K:-4000}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-5}
TLS=${TLS:-}
LOG_LEVEL=${LOG_LEVEL:-warn}
A_ENV=${A_ENV:-}
B_ENV=${B_ENV:-}
BASE_PORT=${BASE_PORT:-26001}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/doorman-memab.XXXXXX)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bl_init # cleanup at exit: stops what BL_PIDS holds; KEEP=1 keeps the work folder
cd "$WORK"
export GOTOOLCHAIN=local
for t in fakeimap imapload; do go build -C "$ROOT" -o "$WORK/bin/$t" "./bench/$t"; done
bl_users 1000
bl_passwd_file users.passwd "$BASE_PORT"
PORT=$((BASE_PORT + 1))
LOAD_ARGS=()
cat >doorman.yaml <<EOC
listeners:
  - {name: imap, protocol: imap, address: "127.0.0.1:$PORT"}
EOC
if [ -n "$TLS" ]; then
	make -s -C "$ROOT" build >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
	bl_certs
	PORT=$((BASE_PORT + 2))
	cat >>doorman.yaml <<EOC
  - {name: imaps, protocol: imap, address: "127.0.0.1:$PORT", ssl: true}
ssl_cert: $WORK/certs/doorman.pem
ssl_key: $WORK/certs/doorman-key.pem
EOC
	LOAD_ARGS=(-tls -cafile "$WORK/certs/ca.pem")
fi
cat >>doorman.yaml <<EOC
passdb:
  - {driver: passwd-file, path: users.passwd}
login_trusted_networks: [127.0.0.0/8]
log: {level: $LOG_LEVEL, format: json}
EOC
rss() { awk '/VmRSS/ {print $2*1024}' "/proc/$1/status"; }
bl_start_fake "$BASE_PORT" 0
echo "K=$K ROUNDS=$ROUNDS SETTLE=${SETTLE}s ${TLS:+TLS }before=$BEFORE${A_ENV:+ ($A_ENV)} after=$AFTER${B_ENV:+ ($B_ENV)}"
for round in $(seq 1 "$ROUNDS"); do
	for b in before after; do
		bin=$BEFORE envs=$A_ENV
		[ $b = after ] && bin=$AFTER envs=$B_ENV
		# shellcheck disable=SC2086 # envs is a list of VAR=value words
		env $envs "$bin" -c doorman.yaml >"d-$b.log" 2>&1 &
		dp=$!
		BL_PIDS+=("$dp")
		sleep 1
		./bin/imapload -addr "127.0.0.1:$PORT" "${LOAD_ARGS[@]}" -users users.txt -n 20 -hold 1s -progress 0 >/dev/null 2>&1
		sleep 1
		kill -USR1 "$dp"
		sleep 1
		r0=$(rss "$dp")
		loads=()
		for i in 1 2; do
			./bin/imapload -addr "127.0.0.1:$PORT" "${LOAD_ARGS[@]}" -users users.txt -n $((K / 2)) -idle -progress 0 \
				-source-ips "127.80.$i.1-127.80.$i.200" >"load-$i.out" 2>&1 &
			loads+=($!)
		done
		for _ in $(seq 1 240); do
			[ "$(ls "/proc/$dp/fd" | wc -l)" -ge $((2 * K)) ] && break
			sleep 0.5
		done
		sleep "$SETTLE"
		r1=$(rss "$dp")
		kill -USR1 "$dp"
		sleep 2
		r2=$(rss "$dp")
		h=($(grep -o '"heap/objects":[0-9]*' "d-$b.log" | cut -d: -f2 | sed -n '1p;$p'))
		h0=${h[0]} h1=${h[1]}
		trims=""
		[ "$LOG_LEVEL" = debug ] && trims=$(grep -c 'memory returned to the kernel' "d-$b.log" || true)
		echo "$b $(((h1 - h0) / K)) $(((r1 - r0) / K)) $(((r2 - r0) / K))" >>results.txt
		echo "round $round $b: heap objects $(((h1 - h0) / K)) B/session, RSS raw $(((r1 - r0) / K)) B/session, RSS after GC $(((r2 - r0) / K)) B/session (K=$K, fds $(ls "/proc/$dp/fd" | wc -l)${trims:+, trims logged $trims})"
		kill -INT "${loads[@]}" 2>/dev/null || true
		wait "${loads[@]}" 2>/dev/null || true
		kill -KILL "$dp"
		bl_forget "$dp"
		wait "$dp" 2>/dev/null || true
		sleep 1
	done
done
# median COLUMN SIDE: the median of one column of results.txt for before or after.
median() { awk -v s="$2" -v c="$1" '$1 == s {print $c}' results.txt | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
for b in before after; do
	echo "median $b: heap objects $(median 2 $b) B/session, RSS raw $(median 3 $b) B/session, RSS after GC $(median 4 $b) B/session"
done
