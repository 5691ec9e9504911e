#!/usr/bin/env bash
# bench/loginab.sh: A/B of Doorman's CPU per login, two binaries (or two environments for
# one binary) alternated in one run: the machine is shared and noisy, so compare within
# the run and take medians.
#
#   bench/loginab.sh BEFORE_BIN AFTER_BIN
#   ROUNDS=7 RATE=1000 SECS=10 bench/loginab.sh A B
#   A_ENV="GOMAXPROCS=2" B_ENV="GOMAXPROCS=1" bench/loginab.sh BIN BIN
#
# For each round and side: a fresh Doorman (passwd-file passdb, {PLAIN} passwords, every
# user proxied to bench/fakeimap, clients not trusted as real clients are not, log level
# warn), a 2 s warm-up, then bench/loginrate at RATE logins/s for SECS seconds (32
# workers, connect → greeting → LOGIN → LOGOUT → close, 250 source addresses) and, with
# MAX_SECS > 0, unpaced for MAX_SECS seconds. PERF=FILE records the paced part with
# `perf record -e cpu-clock -g` into FILE.A and FILE.B (the last round's). Prints per round: logins, p50/p99 latency,
# Doorman's CPU µs per login (utime+stime from /proc) and its user-space part; then the
# medians of each side and the ratio AFTER ÷ BEFORE.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,15p' "$0"; exit 2; }
BEFORE=$(realpath "$1") AFTER=$(realpath "$2")
ROUNDS=${ROUNDS:-5}
RATE=${RATE:-1000}
SECS=${SECS:-10}
MAX_SECS=${MAX_SECS:-0}
A_ENV=${A_ENV:-}
B_ENV=${B_ENV:-}
BASE_PORT=${BASE_PORT:-26101}
EXTRA_CONFIG=${EXTRA_CONFIG:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/doorman-loginab.XXXXXX)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bl_init # cleanup at exit: stops what BL_PIDS holds; KEEP=1 keeps the work folder
cd "$WORK"
export GOTOOLCHAIN=local
for t in fakeimap loginrate; do go build -C "$ROOT" -o "$WORK/bin/$t" "./bench/$t"; done
bl_users 2000
bl_passwd_file users.passwd "$BASE_PORT"
cat >doorman.yaml <<EOC
listeners:
  - {name: imap, protocol: imap, address: "127.0.0.1:$((BASE_PORT + 1))"}
passdb:
  - {driver: passwd-file, path: users.passwd}
log: {level: warn, format: json}
disable_plaintext_auth: no
$EXTRA_CONFIG
EOC
# cpu PID: utime stime in clock ticks.
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
bl_start_fake "$BASE_PORT" 0
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
# run SIDE: one measurement; sets LINE to "cpu_us ucpu_us p50 p99 logins [max_cpu_us max_rate]".
run() {
	local side=$1 bin=$BEFORE envs=$A_ENV
	[ "$side" = B ] && bin=$AFTER envs=$B_ENV
	env $envs "$bin" -c doorman.yaml >"d-$side.log" 2>&1 &
	local dp=$!
	BL_PIDS+=("$dp")
	for _ in $(seq 1 50); do
		(exec 3<>"/dev/tcp/127.0.0.1/$((BASE_PORT + 1))") 2>/dev/null && break
		sleep 0.1
	done
	./bin/loginrate -addr "127.0.0.1:$((BASE_PORT + 1))" -users users.txt -workers 8 -duration 2s \
		-source-ips 127.90.0.1-127.90.0.250 >/dev/null 2>&1 || true
	local c0 c1 out
	local perfpid=
	if [ -n "${PERF:-}" ]; then
		perf record -e cpu-clock -g -o "$PERF.$side" -p "$dp" 2>/dev/null >/dev/null &
		perfpid=$!
	fi
	c0=($(cpu "$dp"))
	out=$(./bin/loginrate -addr "127.0.0.1:$((BASE_PORT + 1))" -users users.txt -workers 32 -rate "$RATE" \
		-duration "${SECS}s" -source-ips 127.91.0.1-127.91.0.250 2>&1 | grep RESULT)
	c1=($(cpu "$dp"))
	if [ -n "$perfpid" ]; then kill -INT "$perfpid"; wait "$perfpid" || true; fi
	local n=$(get logins "$out")
	[ -n "$n" ] && [ "$n" -gt 0 ] || { echo "no logins through side $side: $out" >&2; tail -5 "d-$side.log" >&2; exit 1; }
	local all=$(((c1[0] + c1[1] - c0[0] - c0[1]) * TICK_US / n))
	local usr=$(((c1[0] - c0[0]) * TICK_US / n))
	local line="$all $usr $(get p50_ms "$out") $(get p99_ms "$out") $n"
	if [ "$MAX_SECS" -gt 0 ]; then
		c0=($(cpu "$dp"))
		out=$(./bin/loginrate -addr "127.0.0.1:$((BASE_PORT + 1))" -users users.txt -workers 32 \
			-duration "${MAX_SECS}s" -source-ips 127.92.0.1-127.92.0.250 2>&1 | grep RESULT)
		c1=($(cpu "$dp"))
		n=$(get logins "$out")
		line="$line $(((c1[0] + c1[1] - c0[0] - c0[1]) * TICK_US / n)) $(get rate "$out")"
	fi
	kill -KILL "$dp"
	bl_forget "$dp"
	wait "$dp" 2>/dev/null || true
	sleep 1
	LINE=$line
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
declare -A COL
for round in $(seq 1 "$ROUNDS"); do
	for side in A B; do
		run "$side"
		r=($LINE)
		echo "round $round $side: ${r[0]} us/login (user ${r[1]}), p50 ${r[2]} ms, p99 ${r[3]} ms, ${r[4]} logins${r[5]:+; unpaced ${r[5]} us/login at ${r[6]}/s}"
		for i in "${!r[@]}"; do COL[$side.$i]+="${r[$i]} "; done
	done
done
names=("CPU us/login at $RATE/s" "user-space us/login" "p50 ms" "p99 ms" logins "unpaced CPU us/login" "unpaced logins/s")
for i in 0 1 2 3 5 6; do
	[ -n "${COL[A.$i]:-}" ] || continue
	a=$(tr ' ' '\n' <<<"${COL[A.$i]}" | grep . | median)
	b=$(tr ' ' '\n' <<<"${COL[B.$i]}" | grep . | median)
	echo "median ${names[$i]}: A $a, B $b, B/A $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}')"
done
