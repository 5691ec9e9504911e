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
WARMUP=20
NUSERS=${NUSERS:-50}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/doorman-idle.XXXXXX)
START=$SECONDS
BL_LOG_FD=1 # the log is the report: stdout
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bl_init

# ---- helpers (the rest are bench/lib.sh's) -----------------------------------------------

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$DOORMAN_PID/status"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$DOORMAN_PID/status"; }
tcp_inuse() { awk '$1=="TCP:" {print $3}' /proc/net/sockstat; }
tcp_mem_pages() { awk '$1=="TCP:" {for (i=2;i<NF;i++) if ($i=="mem") print $(i+1)}' /proc/net/sockstat; }
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }

# gc: SIGUSR1 makes Doorman run runtime.GC + debug.FreeOSMemory (cmd/doorman/main.go).
gc() {
	kill -USR1 "$DOORMAN_PID"
	sleep 1.5
}

# start_doorman TAG: a fresh Doorman on the next port from PROXY_PORT up. A new port each
# time: Doorman's listener does not set SO_REUSEADDR, so it cannot bind its port again while
# a connection it closed itself (e.g. after LOGOUT) is in TIME_WAIT there. If the bind
# fails all the same (TIME_WAIT left by an earlier run), the next port is tried.
DOORMAN_STARTS=0
start_doorman() {
	local tag=$1
	for _ in 1 2 3 4 5; do
		DOORMAN_PORT=$((PROXY_PORT + DOORMAN_STARTS))
		DOORMAN_STARTS=$((DOORMAN_STARTS + 1))
		write_doorman_config "$DOORMAN_PORT"
		bl_run_doorman "$WORK/doorman.yaml" "$WORK/doorman-$tag.log" "$DOORMAN_PORT" && return 0
		log "trying the next port"
	done
	die "Doorman could not bind 5 ports in a row"
}

# The imapload summary lines printed as the loaders stop.
SUMMARY_LINES='login_latency|failure |dropped |noop_fail'

# ---- build and set up ------------------------------------------------------------------

log "machine: $(nproc) cores, kernel $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), open files $(ulimit -n), $(go version | cut -d' ' -f3)"
bl_build imapload fetchbench
log "doorman $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+uncommitted changes')"

for port in "$BACKEND_PORT" "$PROXY_PORT"; do
	bl_port_free "$port" || die "port $port is in use"
done

# The users: the same names and passwords at the backend and in Doorman's passwd-file.
bl_users "$NUSERS"
bl_passwd_file "$WORK/users.passwd" "$BACKEND_PORT"
FETCH_USER=u001
FETCH_PASS=pw-u001

log "starting the Dovecot backend on 127.0.0.1:$BACKEND_PORT ($NUSERS users)"
bl_start_backend "$BACKEND_PORT"
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

# idle_run RUN K: one measurement with a fresh Doorman.
idle_run() {
	local run=$1 k=$2
	local tag="r$run-k$k"
	log "run $run, K=$k: fresh Doorman (load average $(loadavg))"
	bl_wait_backend_idle
	start_doorman "$tag"

	bl_start_loaders "127.0.0.1:$DOORMAN_PORT" "$WARMUP" 10 "$tag-warm" -progress 5s
	bl_wait_loaders 60
	[ "$ESTABLISHED" = "$WARMUP" ] || log "warning: warm-up established $ESTABLISHED of $WARMUP"
	bl_settle "$DOORMAN_PID"
	local raw_before before fds_before tcp_before mem_before slab_before cpu_before
	raw_before=$(rss_kb)
	gc
	before=$(rss_kb)
	[ -z "$(memory_line)" ] || log "  Doorman before: $(memory_line)"
	fds_before=$(bl_fds "$DOORMAN_PID")
	tcp_before=$(tcp_inuse)
	mem_before=$(tcp_mem_pages)
	slab_before=$(slab_kb)
	cpu_before=$(bl_cpu "$DOORMAN_PID")

	local t0=$SECONDS
	bl_start_loaders "127.0.0.1:$DOORMAN_PORT" "$k" 20 "$tag" -progress 5s
	bl_wait_loaders $((k / 20 + 60))
	local est=$ESTABLISHED fail=$FAILED setup=$((SECONDS - t0))
	bl_settle "$DOORMAN_PID"
	sleep 2
	local raw_after after fds_after tcp_after mem_after slab_after cpu_after thr bimap
	cpu_after=$(bl_cpu "$DOORMAN_PID")
	raw_after=$(rss_kb)
	gc
	after=$(rss_kb)
	[ -z "$(memory_line)" ] || log "  Doorman after:  $(memory_line)"
	fds_after=$(bl_fds "$DOORMAN_PID")
	tcp_after=$(tcp_inuse)
	mem_after=$(tcp_mem_pages)
	slab_after=$(slab_kb)
	thr=$(threads)
	bimap=$(bl_backend_procs imap)

	local per per_raw cpu_us
	per=$(awk -v a="$after" -v b="$before" -v k="$k" 'BEGIN {printf "%.0f", (a-b)*1024/k}')
	per_raw=$(awk -v a="$raw_after" -v b="$raw_before" -v k="$k" 'BEGIN {printf "%.0f", (a-b)*1024/k}')
	cpu_us=$(awk -v a="$cpu_after" -v b="$cpu_before" -v k="$k" 'BEGIN {printf "%.0f", (a-b)*10000/k}')
	log "run $run, K=$k: established $est, failed $fail (set-up and settle ${setup}s)"
	log "  Doorman RSS after GC $before -> $after kB = $per B/session; raw $raw_before -> $raw_after kB = $per_raw B/session"
	log "  Doorman fds +$((fds_after - fds_before)), threads $thr, CPU $(((cpu_after - cpu_before) * 10)) ms = $cpu_us us/login (incl. settle)"
	log "  machine: TCP sockets in use +$((tcp_after - tcp_before)), TCP mem pages $mem_before -> $mem_after; Slab +$((slab_after - slab_before)) kB (incl. $bimap backend imap processes)"

	bl_stop_loaders "$SUMMARY_LINES"
	log "run $run, K=$k: NOOP check $NOOP_OK/$NOOP_CHECKED ok, $DROPPED dropped while held"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$k" "$est" "$fail" \
		"$before" "$after" "$raw_before" "$raw_after" "$per" "$per_raw" $((fds_after - fds_before)) \
		$((tcp_after - tcp_before)) $((mem_after - mem_before)) $((slab_after - slab_before)) "$thr" "$cpu_us" \
		"$NOOP_OK/$NOOP_CHECKED" "$DROPPED" >>"$RESULTS"
	PER_AFTER[$k]+="$per "
	PER_RAW[$k]+="$per_raw "
	PER_CPU[$k]+="$cpu_us "
	bl_stop_doorman
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
	bl_wait_backend_idle
	start_doorman fetch
	local i
	for i in $(seq 1 "$FETCH_RUNS"); do
		log "fetchbench $i/$FETCH_RUNS: $SIZE bytes, $ROUNDS rounds, direct 127.0.0.1:$BACKEND_PORT vs Doorman 127.0.0.1:$DOORMAN_PORT (pid $DOORMAN_PID; load average $(loadavg))"
		timeout 300 "$WORK/bin/fetchbench" -direct "127.0.0.1:$BACKEND_PORT" -proxy "127.0.0.1:$DOORMAN_PORT" \
			-user "$FETCH_USER" -pass "$FETCH_PASS" -size "$SIZE" -rounds "$ROUNDS" -proxy-pid "$DOORMAN_PID" |
			tee "$WORK/fetch-$i.out" || log "fetchbench failed (status $?)"
		echo
	done
	# Unloaded login latency: one login at a time, through Doorman and then directly.
	local target
	for target in "Doorman:$DOORMAN_PORT" "backend:$BACKEND_PORT"; do
		"$WORK/bin/imapload" -addr "127.0.0.1:${target#*:}" -n 200 -users "$WORK/users.txt" -concurrency 1 \
			-hold 1ms -progress 0 -label "unloaded-${target%%:*}" >"$WORK/unloaded-${target%%:*}.out" 2>&1 || true
		log "unloaded logins (200, one at a time) to the ${target%%:*}: $(grep -h 'login_latency\|failure' "$WORK/unloaded-${target%%:*}.out" | sed 's/.*login_latency //' | tr '\n' ' ')"
	done
	log "fetchbench A/A (noise floor): the backend on both sides (load average $(loadavg))"
	timeout 300 "$WORK/bin/fetchbench" -direct "127.0.0.1:$BACKEND_PORT" -proxy "127.0.0.1:$BACKEND_PORT" \
		-user "$FETCH_USER" -pass "$FETCH_PASS" -size "$SIZE" -rounds "$ROUNDS" || log "fetchbench A/A failed (status $?)"
	bl_stop_doorman
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
	bl_wait_backend_idle
	log "direct to the backend, K=$k (load average $(loadavg))"
	bl_start_loaders "127.0.0.1:$BACKEND_PORT" "$k" 20 "direct-k$k" -progress 5s
	bl_wait_loaders $((k / 20 + 60))
	log "direct K=$k: established $ESTABLISHED, failed $FAILED"
	bl_stop_loaders "$SUMMARY_LINES"
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
log "done in $(elapsed)s (load average $(loadavg))"
