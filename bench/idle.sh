#!/usr/bin/env bash
# bench/idle.sh: Doorman's memory per idle proxied IMAP session, and 20 MB FETCH
# throughput through Doorman against the backend directly, with Doorman's CPU per GB.
#
#   bench/idle.sh                 # as root (the Dovecot test backend needs it), from anywhere
#   RUNS=1 KS="1000" bench/idle.sh   # a quick look
#
# What it does:
#   1. `make build`, and builds bench/imapload and bench/fetchbench into a temporary folder.
#   2. Starts a private Dovecot backend (bin/devbackend) and writes a Doorman configuration
#      and passwd-file there: every user proxied to the backend with password forwarding,
#      login_trusted_networks 127.0.0.0/8, log level warn.
#   3. RUNS times, for each K in KS: a fresh Doorman; 20 warm-up sessions; settle; SIGUSR1
#      (Doorman then runs a GC and returns free memory to the kernel: cmd/doorman/main.go);
#      VmRSS before; K idle sessions (LOGIN + SELECT INBOX, then nothing) from imapload
#      processes of at most PER_PROC sessions each, from many 127.x source addresses;
#      settle (Doorman's fd count steady); VmRSS raw, SIGUSR1, VmRSS after. Reports
#      (after - before) / K, raw and after GC, with /proc/net/sockstat and Slab deltas.
#      The loaders then check every held session with NOOP before closing it.
#   4. fetchbench, FETCH_RUNS times: SIZE bytes, ROUNDS interleaved rounds direct vs through
#      Doorman, with Doorman's CPU; then once with the backend on both sides (an A/A run: the
#      noise floor of the method on this machine). Login latency: 200 logins one at a time
#      through Doorman and directly; 1000 sessions straight to the backend (as loaded as step 3).
#   5. Medians over the runs. Everything it started is stopped on exit (trap). It stops
#      starting new steps once BUDGET seconds have passed.
#
# Environment: KS ("1000 4000 8000"), RUNS (3), PER_PROC (4000), CONCURRENCY (per loader,
# 16), SIZE (20000000), ROUNDS (30), FETCH_RUNS (3), LOG_LEVEL (warn; at info Doorman also
# logs heap/stack/goroutines at each SIGUSR1, which this script prints), BUDGET (800 s),
# BACKEND_PORT (21143), PROXY_PORT (21144 for the first Doorman; each restart takes the next
# port), NUSERS (50: users u001.. share the sessions), KEEP=1 keeps the work folder (logs).
set -euo pipefail

KS=${KS:-"1000 4000 8000"}
RUNS=${RUNS:-3}
PER_PROC=${PER_PROC:-4000}
CONCURRENCY=${CONCURRENCY:-16}
SIZE=${SIZE:-20000000}
ROUNDS=${ROUNDS:-30}
FETCH_RUNS=${FETCH_RUNS:-3}
LOG_LEVEL=${LOG_LEVEL:-warn}
BUDGET=${BUDGET:-800}
BACKEND_PORT=${BACKEND_PORT:-21143}
PROXY_PORT=${PROXY_PORT:-21144}
KEEP=${KEEP:-0}
WARMUP=20
NUSERS=${NUSERS:-50}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/doorman-idle.XXXXXX)
chmod 755 "$WORK"
START=$SECONDS

BACKEND_PID=""
DOORMAN_PID=""
LOADER_PIDS=()

log() { printf '%s %s\n' "$(date +%T)" "$*"; }
die() { log "FATAL: $*"; exit 1; }

cleanup() {
	local rc=$?
	set +e
	for p in "${LOADER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${LOADER_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	if [ -n "$DOORMAN_PID" ]; then
		kill -TERM "$DOORMAN_PID" 2>/dev/null
		wait "$DOORMAN_PID" 2>/dev/null
	fi
	if [ -n "$BACKEND_PID" ]; then
		kill -TERM "$BACKEND_PID" 2>/dev/null # devbackend stops its Dovecot
		for _ in $(seq 1 200); do kill -0 "$BACKEND_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$BACKEND_PID" 2>/dev/null
		wait "$BACKEND_PID" 2>/dev/null
	fi
	if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
		echo "work folder kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers -------------------------------------------------------------------------

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$DOORMAN_PID/status"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$DOORMAN_PID/status"; }
fd_count() { ls "/proc/$DOORMAN_PID/fd" | wc -l; }
tcp_inuse() { awk '$1=="TCP:" {print $3}' /proc/net/sockstat; }
tcp_mem_pages() { awk '$1=="TCP:" {for (i=2;i<NF;i++) if ($i=="mem") print $(i+1)}' /proc/net/sockstat; }
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
elapsed() { echo $((SECONDS - START)); }

# gc: SIGUSR1 makes Doorman run runtime.GC + debug.FreeOSMemory (cmd/doorman/main.go).
gc() {
	kill -USR1 "$DOORMAN_PID"
	sleep 1.5
}

# settle waits until Doorman's fd count has not changed for 3 s (at most 90 s).
settle() {
	local prev=-1 same=0 n
	for _ in $(seq 1 90); do
		n=$(fd_count)
		if [ "$n" = "$prev" ]; then
			same=$((same + 1))
			[ $same -ge 3 ] && return 0
		else
			same=0
		fi
		prev=$n
		sleep 1
	done
	log "warning: Doorman's fd count did not settle (last $n)"
}

# greets HOST PORT: succeeds if an IMAP greeting arrives within 2 s.
greets() {
	timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2 && head -c 4 <&3 | grep -q '^\* OK'" 2>/dev/null
}

backend_master() { pgrep -P "$BACKEND_PID" -x dovecot | head -1; }
backend_imap_procs() {
	local m
	m=$(backend_master)
	if [ -n "$m" ]; then pgrep -c -P "$m" -x imap || true; else echo 0; fi
}

# start_doorman TAG: a fresh Doorman on the next port from PROXY_PORT up. A new port each
# time: Doorman's listener does not set SO_REUSEADDR, so it cannot bind its port again while
# a connection it closed itself (e.g. after LOGOUT) is in TIME_WAIT there. If the bind
# fails all the same (TIME_WAIT left by an earlier run), the next port is tried.
DOORMAN_STARTS=0
start_doorman() {
	local tag=$1 try
	DOORMAN_LOG="$WORK/doorman-$tag.log"
	for try in 1 2 3 4 5; do
		DOORMAN_PORT=$((PROXY_PORT + DOORMAN_STARTS))
		DOORMAN_STARTS=$((DOORMAN_STARTS + 1))
		write_doorman_config "$DOORMAN_PORT"
		"$ROOT/bin/doorman" -c "$WORK/doorman.yaml" >"$DOORMAN_LOG" 2>&1 &
		DOORMAN_PID=$!
		for _ in $(seq 1 100); do
			greets 127.0.0.1 "$DOORMAN_PORT" && return 0
			kill -0 "$DOORMAN_PID" 2>/dev/null || break
			sleep 0.1
		done
		wait "$DOORMAN_PID" 2>/dev/null || true
		if grep -q 'address already in use' "$DOORMAN_LOG"; then
			log "Doorman cannot bind 127.0.0.1:$DOORMAN_PORT ($(ss -Htan state time-wait "( sport = :$DOORMAN_PORT )" | wc -l) TIME_WAIT sockets on that port): trying the next port"
			continue
		fi
		cat "$DOORMAN_LOG"
		die "Doorman does not start on 127.0.0.1:$DOORMAN_PORT"
	done
	die "Doorman could not bind 5 ports in a row"
}

stop_doorman() {
	local rc=0
	kill -0 "$DOORMAN_PID" 2>/dev/null || { log "Doorman $DOORMAN_PID was already gone (crash?)"; tail -20 "$DOORMAN_LOG"; }
	kill -TERM "$DOORMAN_PID" 2>/dev/null || true
	wait "$DOORMAN_PID" || rc=$?
	[ $rc -eq 0 ] || log "Doorman exited with status $rc"
	local nwarn nerr
	# (SIGUSR1's "memory" lines are logged at warn: not a problem)
	nwarn=$(grep -v '"msg":"memory"' "$DOORMAN_LOG" | grep -c '"level":"warn"' || true)
	nerr=$(grep -c '"level":"error"\|panic' "$DOORMAN_LOG" || true)
	if [ "$nwarn" != 0 ] || [ "$nerr" != 0 ]; then
		log "Doorman log $DOORMAN_LOG: $nwarn warn, $nerr error lines; first ones:"
		grep -v '"msg":"memory"' "$DOORMAN_LOG" | grep '"level":"warn"\|"level":"error"\|panic' | head -5 | cut -c1-400
		cp "$DOORMAN_LOG" "$WORK/kept-$(basename "$DOORMAN_LOG")"
	fi
	DOORMAN_PID=""
}

# wait_backend_idle: the backend's imap processes of closed sessions exit (at most 60 s).
wait_backend_idle() {
	local n
	for _ in $(seq 1 120); do
		n=$(backend_imap_procs)
		[ "$n" -le 2 ] && return 0
		sleep 0.5
	done
	log "warning: $n backend imap processes still running"
}

# start_loaders TAG K SRCBASE: K sessions from ceil(K/PER_PROC) imapload processes, added
# to LOADER_PIDS / LOADER_OUTS (NEW_FROM is the index of the first new one).
# Process i uses the source addresses 127.<SRCBASE+i>.0.1-127.<SRCBASE+i>.0.50.
LOADER_OUTS=()
start_loaders() {
	local tag=$1 k=$2 base=$3
	local procs=$(((k + PER_PROC - 1) / PER_PROC)) i n left=$k
	NEW_FROM=${#LOADER_OUTS[@]}
	for ((i = 0; i < procs; i++)); do
		n=$((left / (procs - i)))
		left=$((left - n))
		local out="$WORK/load-$tag-$i.out"
		"$WORK/bin/imapload" -addr "127.0.0.1:$DOORMAN_PORT" -n "$n" -users "$WORK/backend-users" \
			-source-ips "127.$((base + i)).0.1-127.$((base + i)).0.50" -concurrency "$CONCURRENCY" \
			-hold 0 -progress 5s -label "$tag/p$i" >"$out" 2>"$out.err" &
		LOADER_PIDS+=($!)
		LOADER_OUTS+=("$out")
	done
}

# wait_loaders_ready SECONDS: every loader printed READY (or exited). Sets ESTABLISHED and
# FAILED, summed over the loaders started last (from NEW_FROM).
wait_loaders_ready() {
	local limit=$1 i out all
	for ((t = 0; t < limit * 2; t++)); do
		all=1
		for i in "${!LOADER_OUTS[@]}"; do
			out=${LOADER_OUTS[$i]}
			grep -q ' READY ' "$out" 2>/dev/null && continue
			kill -0 "${LOADER_PIDS[$i]}" 2>/dev/null || { log "loader $out exited early:"; cat "$out" "$out.err" | tail -5; continue; }
			all=0
		done
		[ $all = 1 ] && break
		sleep 0.5
	done
	ESTABLISHED=0
	FAILED=0
	for out in "${LOADER_OUTS[@]:$NEW_FROM}"; do
		local e f
		e=$(sed -n 's/.* READY established=\([0-9]*\) .*/\1/p' "$out")
		f=$(sed -n 's/.* READY .*failed=\([0-9]*\) .*/\1/p' "$out")
		ESTABLISHED=$((ESTABLISHED + ${e:-0}))
		FAILED=$((FAILED + ${f:-0}))
	done
	[ $all = 1 ] || log "warning: loaders not ready after ${limit}s"
}

# stop_loaders: SIGTERM; each loader checks its sessions with NOOP, closes them and prints a
# summary. Sets NOOP_OK, NOOP_CHECKED, DROPPED.
stop_loaders() {
	local p out
	for p in "${LOADER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${LOADER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	LOADER_PIDS=()
	NOOP_OK=0
	NOOP_CHECKED=0
	DROPPED=0
	for out in "${LOADER_OUTS[@]}"; do
		local c o d
		c=$(sed -n 's/.*noop_check checked=\([0-9]*\) .*/\1/p' "$out")
		o=$(sed -n 's/.*noop_check .*ok=\([0-9]*\).*/\1/p' "$out")
		d=$(sed -n 's/.*dropped_while_held=\([0-9]*\) .*/\1/p' "$out")
		NOOP_CHECKED=$((NOOP_CHECKED + ${c:-0}))
		NOOP_OK=$((NOOP_OK + ${o:-0}))
		DROPPED=$((DROPPED + ${d:-0}))
		grep -E 'login_latency|failure |dropped |noop_fail' "$out" | sed 's/^/    /' || true
	done
	LOADER_OUTS=()
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.4g\n", (a[NR/2]+a[NR/2+1])/2}'; }

# ---- build and set up ------------------------------------------------------------------

log "machine: $(nproc) cores, kernel $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), open files $(ulimit -n), $(go version | cut -d' ' -f3)"
log "building (make build)"
make -s build >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; die "make build failed"; }
mkdir -p "$WORK/bin"
go build -o "$WORK/bin/imapload" ./bench/imapload
go build -o "$WORK/bin/fetchbench" ./bench/fetchbench
log "doorman $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+uncommitted changes')"

for port in "$BACKEND_PORT" "$PROXY_PORT"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use"; fi
done

# The users: the same names and passwords at the backend and in Doorman's passwd-file.
: >"$WORK/backend-users"
: >"$WORK/users.passwd"
for i in $(seq 1 "$NUSERS"); do
	u=$(printf 'u%03d' "$i")
	echo "$u:pw-$u" >>"$WORK/backend-users"
	echo "$u:{PLAIN}pw-$u::::::proxy host=127.0.0.1 port=$BACKEND_PORT" >>"$WORK/users.passwd"
done
FETCH_USER=u001
FETCH_PASS=pw-u001

log "starting the Dovecot backend on 127.0.0.1:$BACKEND_PORT ($NUSERS users)"
"$ROOT/bin/devbackend" -dir "$WORK/backend" -port "$BACKEND_PORT" -users "$WORK/backend-users" >"$WORK/backend.log" 2>&1 &
BACKEND_PID=$!
for _ in $(seq 1 300); do
	grep -q 'dovecot IMAP on' "$WORK/backend.log" 2>/dev/null && break
	kill -0 "$BACKEND_PID" 2>/dev/null || { cat "$WORK/backend.log"; die "devbackend exited"; }
	sleep 0.1
done
greets 127.0.0.1 "$BACKEND_PORT" || die "the backend does not greet"
DOVECOT_CONF=$(find "$WORK/backend" -maxdepth 1 -name dovecot.conf | head -1)
if [ -n "$DOVECOT_CONF" ]; then
	log "backend capacity settings: $(grep -E 'client_limit|process_limit|mail_max_userip|vsz_limit' "$DOVECOT_CONF" | tr -s ' \n' ' ')"
fi

write_doorman_config() {
	cat >"$WORK/doorman.yaml" <<EOF
listeners:
  - {name: imap, protocol: imap, address: "127.0.0.1:$1"}
passdb:
  - {driver: passwd-file, path: users.passwd}
login_trusted_networks: [127.0.0.0/8]
log: {level: $LOG_LEVEL, format: json}
EOF
}
write_doorman_config "$PROXY_PORT"
"$ROOT/bin/doorman" -c "$WORK/doorman.yaml" -t >/dev/null || die "Doorman rejects the configuration"

# ---- idle sessions -----------------------------------------------------------------------

declare -A PER_AFTER PER_RAW PER_CPU
RESULTS="$WORK/idle.tsv"
printf 'run\tK\test\tfail\trss_before_kB\trss_after_kB\trss_raw_before_kB\trss_raw_after_kB\tB/session_gc\tB/session_raw\tfds_delta\ttcp_inuse_delta\ttcp_mem_pages_delta\tslab_delta_kB\tthreads\tcpu_us/login\tnoop_ok\tdropped\n' >"$RESULTS"

# memory_line: Doorman's last "memory" log line (SIGUSR1; logged at warn, so at any level).
memory_line() {
	grep '"msg":"memory"' "$DOORMAN_LOG" | tail -1 | sed 's/.*"msg":"memory",//; s/}$//'
}

# cpu_ticks: Doorman's utime+stime in clock ticks (10 ms).
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$DOORMAN_PID/stat"; }

# idle_run RUN K: one measurement with a fresh Doorman.
idle_run() {
	local run=$1 k=$2
	local tag="r$run-k$k"
	log "run $run, K=$k: fresh Doorman (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	wait_backend_idle
	start_doorman "$tag"

	start_loaders "$tag-warm" "$WARMUP" 10
	wait_loaders_ready 60
	[ "$ESTABLISHED" = "$WARMUP" ] || log "warning: warm-up established $ESTABLISHED of $WARMUP"
	settle
	local raw_before before fds_before tcp_before mem_before slab_before cpu_before
	raw_before=$(rss_kb)
	gc
	before=$(rss_kb)
	[ -z "$(memory_line)" ] || log "  Doorman before: $(memory_line)"
	fds_before=$(fd_count)
	tcp_before=$(tcp_inuse)
	mem_before=$(tcp_mem_pages)
	slab_before=$(slab_kb)
	cpu_before=$(cpu_ticks)

	local t0=$SECONDS
	start_loaders "$tag" "$k" 20
	wait_loaders_ready $((k / 20 + 60))
	local est=$ESTABLISHED fail=$FAILED setup=$((SECONDS - t0))
	settle
	sleep 2
	local raw_after after fds_after tcp_after mem_after slab_after cpu_after thr bimap
	cpu_after=$(cpu_ticks)
	raw_after=$(rss_kb)
	gc
	after=$(rss_kb)
	[ -z "$(memory_line)" ] || log "  Doorman after:  $(memory_line)"
	fds_after=$(fd_count)
	tcp_after=$(tcp_inuse)
	mem_after=$(tcp_mem_pages)
	slab_after=$(slab_kb)
	thr=$(threads)
	bimap=$(backend_imap_procs)

	local per per_raw cpu_us
	per=$(awk -v a="$after" -v b="$before" -v k="$k" 'BEGIN {printf "%.0f", (a-b)*1024/k}')
	per_raw=$(awk -v a="$raw_after" -v b="$raw_before" -v k="$k" 'BEGIN {printf "%.0f", (a-b)*1024/k}')
	cpu_us=$(awk -v a="$cpu_after" -v b="$cpu_before" -v k="$k" 'BEGIN {printf "%.0f", (a-b)*10000/k}')
	log "run $run, K=$k: established $est, failed $fail (set-up and settle ${setup}s)"
	log "  Doorman RSS after GC $before -> $after kB = $per B/session; raw $raw_before -> $raw_after kB = $per_raw B/session"
	log "  Doorman fds +$((fds_after - fds_before)), threads $thr, CPU $(((cpu_after - cpu_before) * 10)) ms = $cpu_us us/login (incl. settle)"
	log "  machine: TCP sockets in use +$((tcp_after - tcp_before)), TCP mem pages $mem_before -> $mem_after; Slab +$((slab_after - slab_before)) kB (incl. $bimap backend imap processes)"

	stop_loaders
	log "run $run, K=$k: NOOP check $NOOP_OK/$NOOP_CHECKED ok, $DROPPED dropped while held"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$k" "$est" "$fail" \
		"$before" "$after" "$raw_before" "$raw_after" "$per" "$per_raw" $((fds_after - fds_before)) \
		$((tcp_after - tcp_before)) $((mem_after - mem_before)) $((slab_after - slab_before)) "$thr" "$cpu_us" \
		"$NOOP_OK/$NOOP_CHECKED" "$DROPPED" >>"$RESULTS"
	PER_AFTER[$k]+="$per "
	PER_RAW[$k]+="$per_raw "
	PER_CPU[$k]+="$cpu_us "
	stop_doorman
}

# idle_k K: RUNS measurements at K, as long as the time budget allows (RESERVE seconds are
# kept for the steps after it).
idle_k() {
	local k=$1 reserve=$2 run need
	for run in $(seq 1 "$RUNS"); do
		need=$((k / 40 + 30))
		if [ $(($(elapsed) + need + reserve)) -gt "$BUDGET" ]; then
			log "skipping run $run K=$k: the time budget (${BUDGET}s) would be exceeded"
			continue
		fi
		idle_run "$run" "$k"
	done
}

# ---- FETCH throughput, and direct logins for comparison -------------------------------------

fetch_step() {
	echo
	wait_backend_idle
	start_doorman fetch
	local i
	for i in $(seq 1 "$FETCH_RUNS"); do
		log "fetchbench $i/$FETCH_RUNS: $SIZE bytes, $ROUNDS rounds, direct 127.0.0.1:$BACKEND_PORT vs Doorman 127.0.0.1:$DOORMAN_PORT (pid $DOORMAN_PID; load average $(cut -d' ' -f1-3 /proc/loadavg))"
		timeout 300 "$WORK/bin/fetchbench" -direct "127.0.0.1:$BACKEND_PORT" -proxy "127.0.0.1:$DOORMAN_PORT" \
			-user "$FETCH_USER" -pass "$FETCH_PASS" -size "$SIZE" -rounds "$ROUNDS" -proxy-pid "$DOORMAN_PID" |
			tee "$WORK/fetch-$i.out" || log "fetchbench failed (status $?)"
		echo
	done
	# Unloaded login latency: one login at a time, through Doorman and then directly.
	local target
	for target in "Doorman:$DOORMAN_PORT" "backend:$BACKEND_PORT"; do
		"$WORK/bin/imapload" -addr "127.0.0.1:${target#*:}" -n 200 -users "$WORK/backend-users" -concurrency 1 \
			-hold 1ms -progress 0 -label "unloaded-${target%%:*}" >"$WORK/unloaded-${target%%:*}.out" 2>&1 || true
		log "unloaded logins (200, one at a time) to the ${target%%:*}: $(grep -h 'login_latency\|failure' "$WORK/unloaded-${target%%:*}.out" | sed 's/.*login_latency //' | tr '\n' ' ')"
	done
	log "fetchbench A/A (noise floor): the backend on both sides (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	timeout 300 "$WORK/bin/fetchbench" -direct "127.0.0.1:$BACKEND_PORT" -proxy "127.0.0.1:$BACKEND_PORT" \
		-user "$FETCH_USER" -pass "$FETCH_PASS" -size "$SIZE" -rounds "$ROUNDS" || log "fetchbench A/A failed (status $?)"
	stop_doorman
	echo
	# Pooled over the runs: the median of every round's ratio, and CPU per GB over all bytes.
	local med runs
	med=$(awk '$1 ~ /^[0-9]+$/ && NF >= 7 {print $5}' "$WORK"/fetch-*.out | median)
	runs=$(sed -n 's/^RESULT size=.*ratio_median=\([0-9.]*\).*/\1/p' "$WORK"/fetch-*.out | tr '\n' ' ')
	awk -v med="$med" -v runs="$runs" -v n="$(awk '$1 ~ /^[0-9]+$/ && NF >= 7' "$WORK"/fetch-*.out | wc -l)" '
		/^RESULT proxy_cpu_s=/ {for (i = 2; i <= NF; i++) {split($i, kv, "="); if (kv[1] == "proxy_cpu_s") c += kv[2]; if (kv[1] == "relayed_GB") g += kv[2]; if (kv[1] == "schedstat_cpu_s") sc += kv[2]}}
		END {printf "== FETCH: %d rounds pooled: median ratio proxy/direct %s (per-run medians: %s); proxy CPU %.2f s (ticks) / %.3f s (schedstat) for %.2f GB = %.3f / %.3f CPU-s per GB\n", n, med, runs, c, sc, g, (g ? c / g : 0), (g ? sc / g : 0)}' "$WORK"/fetch-*.out
}

# direct_step K: K sessions straight to the backend (no Doorman), for the login latency.
direct_step() {
	local k=$1
	wait_backend_idle
	log "direct to the backend, K=$k (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	local save=$DOORMAN_PORT
	DOORMAN_PORT=$BACKEND_PORT # start_loaders connects to DOORMAN_PORT
	start_loaders "direct-k$k" "$k" 20
	DOORMAN_PORT=$save
	wait_loaders_ready $((k / 20 + 60))
	log "direct K=$k: established $ESTABLISHED, failed $FAILED"
	stop_loaders
	echo
}

in_ks() { case " $KS " in *" $1 "*) return 0 ;; esac; return 1; }
# The goals first (1000 and 4000, then the FETCH figures), then the larger Ks as time allows.
in_ks 1000 && idle_k 1000 300
in_ks 4000 && idle_k 4000 200
if [ $(($(elapsed) + 60)) -le "$BUDGET" ]; then fetch_step; else log "skipping fetchbench: the time budget is used up"; fi
if [ $(($(elapsed) + 40)) -le "$BUDGET" ]; then direct_step 1000; else log "skipping the direct login run: the time budget is used up"; fi
for k in $KS; do
	case $k in 1000 | 4000) ;; *) idle_k "$k" 0 ;; esac
done

echo
echo "== idle sessions: raw per-run numbers (RSS in kB; B/session = delta*1024/K)"
column -t -s $'\t' "$RESULTS" 2>/dev/null || cat "$RESULTS"
echo
echo "== idle sessions: medians over runs"
for k in 1000 4000 $KS; do
	[ -n "${PER_AFTER[$k]:-}" ] || continue
	n=$(echo ${PER_AFTER[$k]} | wc -w)
	echo "K=$k  runs=$n  RSS/session after GC: median $(echo ${PER_AFTER[$k]} | tr ' ' '\n' | median) B (runs: ${PER_AFTER[$k]% })  raw: median $(echo ${PER_RAW[$k]} | tr ' ' '\n' | median) B (runs: ${PER_RAW[$k]% })  Doorman CPU/login: median $(echo ${PER_CPU[$k]} | tr ' ' '\n' | median) us"
	PER_AFTER[$k]="" # printed once
done
log "done in $(elapsed)s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
