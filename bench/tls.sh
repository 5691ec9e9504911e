#!/usr/bin/env bash
# bench/tls.sh: Doorman's TLS figures. Memory per idle implicit-TLS IMAP session, full TLS 1.3
# handshakes per Doorman CPU-second, and 20 MB FETCH throughput with TLS against plain text
# through Doorman, with Doorman's CPU per GB. The structure and the memory method are
# bench/idle.sh's.
#
#   bench/tls.sh                          # as root (the Dovecot test backend needs it)
#   RUNS=1 KS="1000" HS_RUNS=1 FETCH_RUNS=1 bench/tls.sh    # a quick look
#
# What it does:
#   1. `make build` (doorman, devcert); builds bench/imapload, fetchbench, tlshs and
#      tlsbackend into a temporary folder. `bin/devcert` makes a test CA and a certificate
#      for 127.0.0.1 there.
#   2. Starts a private Dovecot backend with TLS (bench/tlsbackend: bin/devbackend's Dovecot
#      plus ssl = yes and an imaps port) and writes a Doorman configuration: a plain IMAP
#      listener and an implicit-TLS one (ssl: true) on the next port, ssl_cert/ssl_key from
#      devcert, ssl_client_ca_file its CA; users u001.. proxied to the backend's plain port
#      with password forwarding, and t001 proxied to the backend's imaps port with ssl=yes
#      (destuser u001, for the TLS backend leg of the FETCH step).
#   3. Idle sessions, RUNS times, for each K in KS, for each client mode in MODES (x25519:
#      the client offers only X25519; default: Go's groups, X25519MLKEM768 first, as
#      current clients do; plain: no TLS, the baseline): a fresh Doorman; 20 warm-up
#      sessions the same way; settle; SIGUSR1 (GC + memory returned to the kernel; Doorman
#      logs runtime/metrics' memory classes, which this script keeps); VmRSS; K idle
#      sessions (TLS handshake with certificate verification and no session cache, LOGIN,
#      SELECT INBOX, then nothing) from imapload processes of at most PER_PROC sessions,
#      from many 127.x source addresses; settle; VmRSS raw, SIGUSR1, VmRSS after. Reports
#      (after - before) / K raw and after GC, and the memory classes' deltas per session.
#      The loaders check every session with NOOP before closing it.
#   4. Handshakes, HS_RUNS times: a fresh Doorman and a reference crypto/tls server
#      (`tlshs -serve`, a goroutine per connection), both pinned to core HS_SERVER_CPU
#      (taskset), measured one after the other by bench/tlshs pinned to core HS_CLIENT_CPU:
#      HS_CLIENTS clients, HS_ROUNDS rounds of HS_DURATION per group (X25519 and Go's default
#      = X25519MLKEM768, alternating), full TLS 1.3 handshakes, greeting, close. Handshakes
#      per server CPU-second from /proc/PID/stat utime+stime.
#   5. FETCH, FETCH_RUNS times against one fresh Doorman: fetchbench in TLS mode, ROUNDS
#      rounds of SIZE bytes through five paths in rotating order: plain, TLS client leg,
#      TLS backend leg, TLS on both legs, and TLS straight to the backend (no Doorman: what
#      Dovecot's own TLS delivers); MB/s and Doorman's CPU per GB for each.
#   6. With PROFILE=1 (default), one more K=PROFILE_K measurement per mode (plain too if
#      PLAIN_KS is set) with `doorman -memprofile`: heap profiles at both SIGUSR1s, and what
#      the K sessions hold per session, from `go tool pprof -diff_base`.
#   7. Medians. Everything it started is stopped on exit (trap). Steps that would not fit
#      in BUDGET seconds are skipped.
#
# Environment (defaults in brackets):
#   KS ["1000 4000"; "" skips the idle step], MODES ["x25519 default"], PLAIN_KS [4000; ""
#   for none: the Ks at which plain-text sessions are measured too, the baseline of the same
#   run] in the first PLAIN_RUNS [1] runs, RUNS [3], PER_PROC [4000 sessions per imapload],
#   CONCURRENCY [16 per loader];
#   HS_RUNS [3], HS_CLIENTS [32], HS_ROUNDS [2], HS_DURATION [4s], HS_SERVER_CPU [0],
#   HS_CLIENT_CPU [1];
#   SIZE [20000000], ROUNDS [20], FETCH_RUNS [3];
#   PROFILE [1], PROFILE_K [1000];
#   LOG_LEVEL [warn], BUDGET [900 s], BACKEND_PORT [21243], PROXY_PORT [21244: each Doorman
#   takes the next two ports, plain and TLS], NUSERS [50], KEEP=1 keeps the work folder
#   (logs, profiles), DOORMAN_REV (what to call the tree in the log, for a copy outside git).
set -euo pipefail

KS=${KS-"1000 4000"}
MODES=${MODES:-"x25519 default"}
PLAIN_KS=${PLAIN_KS-4000}
PLAIN_RUNS=${PLAIN_RUNS:-1}
RUNS=${RUNS:-3}
PER_PROC=${PER_PROC:-4000}
CONCURRENCY=${CONCURRENCY:-16}
HS_RUNS=${HS_RUNS:-3}
HS_CLIENTS=${HS_CLIENTS:-32}
HS_ROUNDS=${HS_ROUNDS:-2}
HS_DURATION=${HS_DURATION:-4s}
HS_SERVER_CPU=${HS_SERVER_CPU:-0}
HS_CLIENT_CPU=${HS_CLIENT_CPU:-1}
SIZE=${SIZE:-20000000}
ROUNDS=${ROUNDS:-20}
FETCH_RUNS=${FETCH_RUNS:-3}
PROFILE=${PROFILE:-1}
PROFILE_K=${PROFILE_K:-1000}
LOG_LEVEL=${LOG_LEVEL:-warn}
BUDGET=${BUDGET:-900}
BACKEND_PORT=${BACKEND_PORT:-21243}
PROXY_PORT=${PROXY_PORT:-21244}
WARMUP=20
NUSERS=${NUSERS:-50}
export GOTOOLCHAIN=local

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/doorman-tls.XXXXXX)
START=$SECONDS
BL_LOG_FD=1 # the log is the report: stdout
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bl_init

# ---- helpers (the rest are bench/lib.sh's) ---------------------------------------------------

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$DOORMAN_PID/status"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$DOORMAN_PID/status"; }

# gc: SIGUSR1 makes Doorman run runtime.GC + debug.FreeOSMemory and log its memory classes.
gc() {
	kill -USR1 "$DOORMAN_PID"
	sleep 1.5
}

write_doorman_config() {
	cat >"$WORK/doorman.yaml" <<EOF
listeners:
  - {name: imap, protocol: imap, address: "127.0.0.1:$1"}
  - {name: imaps, protocol: imap, address: "127.0.0.1:$2", ssl: true}
passdb:
  - {driver: passwd-file, path: users.passwd}
login_trusted_networks: [127.0.0.0/8]
ssl_cert: $WORK/certs/doorman.pem
ssl_key: $WORK/certs/doorman-key.pem
ssl_client_ca_file: $WORK/certs/ca.pem
log: {level: $LOG_LEVEL, format: json}
EOF
}

# start_doorman TAG [WRAPPER...]: a fresh Doorman on the next two ports (DOORMAN_PORT plain,
# TLS_PORT implicit TLS); a new pair each time (see bench/idle.sh: no SO_REUSEADDR). Extra
# words run Doorman under a wrapper (taskset); DOORMAN_ARGS are added to its command line.
DOORMAN_STARTS=0
start_doorman() {
	local tag=$1
	shift
	for _ in 1 2 3 4 5; do
		DOORMAN_PORT=$((PROXY_PORT + 2 * DOORMAN_STARTS))
		TLS_PORT=$((DOORMAN_PORT + 1))
		DOORMAN_STARTS=$((DOORMAN_STARTS + 1))
		write_doorman_config "$DOORMAN_PORT" "$TLS_PORT"
		bl_run_doorman "$WORK/doorman.yaml" "$WORK/doorman-$tag.log" "$DOORMAN_PORT" "$@" && return 0
		log "trying the next ports"
	done
	die "Doorman could not bind 5 port pairs in a row"
}

# loader_addr MODE, loader_flags MODE: imapload's address and TLS flags for a client mode.
loader_addr() {
	case $1 in
	plain) echo "127.0.0.1:$DOORMAN_PORT" ;;
	*) echo "127.0.0.1:$TLS_PORT" ;;
	esac
}
loader_flags() {
	case $1 in
	plain) ;;
	*) echo "-tls -cafile $WORK/certs/ca.pem -curves $1" ;;
	esac
}
# start_loaders TAG K SRCBASE MODE: K sessions from ceil(K/PER_PROC) imapload processes.
start_loaders() {
	# shellcheck disable=SC2046
	bl_start_loaders "$(loader_addr "$4")" "$2" "$3" "$1" $(loader_flags "$4") -progress 5s
}
# The imapload summary lines printed as the loaders stop.
SUMMARY_LINES='login_latency|tls handshake|failure |dropped |noop_fail'

range_of() { sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {if (NR) printf "%s-%s", lo, hi; else print "-"}'; }

# mem_class NAME: a field of Doorman's last "memory" line (bytes), e.g. heap/objects.
mem_class() {
	grep '"msg":"memory"' "$DOORMAN_LOG" | tail -1 | grep -o "\"$1\":[0-9]*" | cut -d: -f2
}
MEM_CLASSES="heap/objects heap/unused heap/free heap/stacks metadata/other metadata/mspan/inuse goroutines"
mem_snapshot() { local c v; for c in $MEM_CLASSES; do v=$(mem_class "$c"); printf '%s ' "${v:--}"; done; }

# ---- build and set up ----------------------------------------------------------------------

log "machine: $(nproc) cores, kernel $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), open files $(ulimit -n), $(go version | cut -d' ' -f3)"
bl_build imapload fetchbench tlshs tlsbackend
if [ -n "${DOORMAN_REV:-}" ]; then
	log "doorman $DOORMAN_REV"
else
	log "doorman $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+uncommitted changes')"
fi
bl_certs
log "certificate: $(openssl x509 -in "$WORK/certs/doorman.pem" -noout -text | grep -m1 'Public Key Algorithm' | sed 's/^ *//'), $(openssl x509 -in "$WORK/certs/doorman.pem" -noout -text | grep -m1 -A0 'NIST CURVE\|Public-Key:' | sed 's/^ *//')"

for port in "$BACKEND_PORT" "$PROXY_PORT" $((PROXY_PORT + 1)); do
	bl_port_free "$port" || die "port $port is in use"
done

bl_users "$NUSERS"

log "starting the Dovecot backend with TLS on 127.0.0.1:$BACKEND_PORT ($NUSERS users)"
"$WORK/bin/tlsbackend" -dir "$WORK/backend" -port "$BACKEND_PORT" -users "$WORK/users.txt" \
	-cert "$WORK/certs/doorman.pem" -key "$WORK/certs/doorman-key.pem" >"$WORK/backend.out" 2>"$WORK/backend.log" &
BACKEND_PID=$!
BL_PIDS+=("$BACKEND_PID") # tlsbackend stops its Dovecot on SIGTERM
for _ in $(seq 1 300); do
	grep -q '^imaps ' "$WORK/backend.out" 2>/dev/null && break
	kill -0 "$BACKEND_PID" 2>/dev/null || { cat "$WORK/backend.log"; die "tlsbackend exited"; }
	sleep 0.1
done
BACKEND_IMAPS=$(sed -n 's/^imaps 127.0.0.1:\([0-9]*\)$/\1/p' "$WORK/backend.out")
[ -n "$BACKEND_IMAPS" ] || { cat "$WORK/backend.log"; die "the backend has no imaps port"; }
greets 127.0.0.1 "$BACKEND_PORT" || die "the backend does not greet"
log "backend: $(head -1 "$WORK/backend.log")"

bl_passwd_file "$WORK/users.passwd" "$BACKEND_PORT"
echo "t001:{PLAIN}pw-u001::::::proxy host=127.0.0.1 port=$BACKEND_IMAPS ssl=yes destuser=u001" >>"$WORK/users.passwd"
write_doorman_config "$PROXY_PORT" $((PROXY_PORT + 1))
"$ROOT/bin/doorman" -c "$WORK/doorman.yaml" -t >/dev/null || die "Doorman rejects the configuration"

# ---- idle sessions -------------------------------------------------------------------------

declare -A PER_AFTER PER_RAW PER_CPU PER_OBJ PER_HEAP
RESULTS="$WORK/idle.tsv"
printf 'run\tmode\tK\test\tfail\trss_before_kB\trss_after_kB\trss_raw_before_kB\trss_raw_after_kB\tB/session_gc\tB/session_raw\theap_objects_B/s\theap_unused_B/s\tstacks_B/s\tmeta_other_B/s\tgoroutines\tfds_delta\tthreads\tcpu_us/session\tnoop_ok\tdropped\n' >"$RESULTS"

# per_session AFTER BEFORE K: bytes per session from two byte counts.
per_session() { awk -v a="$1" -v b="$2" -v k="$3" 'BEGIN {if (a == "" || b == "" || a == "-" || b == "-") print "-"; else printf "%.0f", (a-b)/k}'; }

# idle_run RUN K MODE: one measurement with a fresh Doorman.
idle_run() {
	local run=$1 k=$2 mode=$3
	local tag="r$run-k$k-$mode"
	log "run $run, K=$k, $mode: fresh Doorman (load average $(loadavg))"
	bl_wait_backend_idle
	start_doorman "$tag"

	start_loaders "$tag-warm" "$WARMUP" 10 "$mode"
	bl_wait_loaders 60
	[ "$ESTABLISHED" = "$WARMUP" ] || log "warning: warm-up established $ESTABLISHED of $WARMUP"
	bl_settle "$DOORMAN_PID"
	local raw_before before fds_before cpu_before mem_before
	raw_before=$(rss_kb)
	gc
	before=$(rss_kb)
	mem_before=($(mem_snapshot))
	fds_before=$(bl_fds "$DOORMAN_PID")
	cpu_before=$(bl_cpu "$DOORMAN_PID")
	[ -z "${MEMPROFILE_TO:-}" ] || cp "$WORK/heap.prof" "$MEMPROFILE_TO-before.prof"

	local t0=$SECONDS
	start_loaders "$tag" "$k" 20 "$mode"
	bl_wait_loaders $((k / 20 + 60))
	local est=$ESTABLISHED fail=$FAILED setup=$((SECONDS - t0))
	bl_settle "$DOORMAN_PID"
	sleep 2
	local raw_after after fds_after cpu_after thr mem_after
	cpu_after=$(bl_cpu "$DOORMAN_PID")
	raw_after=$(rss_kb)
	gc
	after=$(rss_kb)
	mem_after=($(mem_snapshot))
	fds_after=$(bl_fds "$DOORMAN_PID")
	thr=$(threads)
	[ -z "${MEMPROFILE_TO:-}" ] || cp "$WORK/heap.prof" "$MEMPROFILE_TO-after.prof"

	local per per_raw cpu_us obj unused stacks meta gor
	per=$(awk -v a="$after" -v b="$before" -v k="$k" 'BEGIN {printf "%.0f", (a-b)*1024/k}')
	per_raw=$(awk -v a="$raw_after" -v b="$raw_before" -v k="$k" 'BEGIN {printf "%.0f", (a-b)*1024/k}')
	cpu_us=$(awk -v a="$cpu_after" -v b="$cpu_before" -v k="$k" 'BEGIN {printf "%.0f", (a-b)*10000/k}')
	obj=$(per_session "${mem_after[0]:-}" "${mem_before[0]:-}" "$k")
	unused=$(per_session "${mem_after[1]:-}" "${mem_before[1]:-}" "$k")
	stacks=$(per_session "${mem_after[3]:-}" "${mem_before[3]:-}" "$k")
	meta=$(per_session "${mem_after[4]:-}" "${mem_before[4]:-}" "$k")
	gor="${mem_before[6]:-?}->${mem_after[6]:-?}"
	log "run $run, K=$k, $mode: established $est, failed $fail (set-up and settle ${setup}s)"
	log "  Doorman RSS after GC $before -> $after kB = $per B/session; raw $raw_before -> $raw_after kB = $per_raw B/session"
	log "  Go memory classes per session: heap objects $obj B, heap unused (fragmentation) $unused B, stacks $stacks B, GC metadata $meta B; goroutines $gor"
	log "  Doorman fds +$((fds_after - fds_before)), threads $thr, CPU $(((cpu_after - cpu_before) * 10)) ms = $cpu_us us/session (incl. settle)"

	bl_stop_loaders "$SUMMARY_LINES"
	log "run $run, K=$k, $mode: NOOP check $NOOP_OK/$NOOP_CHECKED ok, $DROPPED dropped while held"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$mode" "$k" "$est" "$fail" \
		"$before" "$after" "$raw_before" "$raw_after" "$per" "$per_raw" "$obj" "$unused" "$stacks" "$meta" "$gor" \
		$((fds_after - fds_before)) "$thr" "$cpu_us" "$NOOP_OK/$NOOP_CHECKED" "$DROPPED" >>"$RESULTS"
	if [ -z "${MEMPROFILE_TO:-}" ]; then
		PER_AFTER[$mode/$k]+="$per "
		PER_RAW[$mode/$k]+="$per_raw "
		PER_CPU[$mode/$k]+="$cpu_us "
		PER_OBJ[$mode/$k]+="$obj "
		PER_HEAP[$mode/$k]+="$unused "
	fi
	bl_stop_doorman
}

# need_s K: a generous estimate of one idle measurement's seconds.
need_s() { echo $(($1 / 100 + 25)); }

# idle_all RESERVE: RUNS rounds; in each, every K and every mode (so the modes of one K are
# measured side by side), plus plain text at the Ks in PLAIN_KS. RESERVE seconds are kept
# for the steps after it.
idle_all() {
	local reserve=$1 run k mode
	for run in $(seq 1 "$RUNS"); do
		for k in $KS; do
			for mode in $(modes_at "$k" "$run"); do
				if [ $(($(elapsed) + $(need_s "$k") + reserve)) -gt "$BUDGET" ]; then
					log "skipping run $run K=$k $mode: the time budget (${BUDGET}s) would be exceeded"
					continue
				fi
				idle_run "$run" "$k" "$mode"
			done
		done
	done
}

# modes_at K [RUN]: MODES, and plain first if K is in PLAIN_KS (and RUN <= PLAIN_RUNS).
modes_at() {
	if [ "${2:-1}" -le "$PLAIN_RUNS" ]; then
		case " $PLAIN_KS " in *" $1 "*) case " $MODES " in *" plain "*) ;; *) printf 'plain ' ;; esac ;; esac
	fi
	echo "$MODES"
}

# ---- handshakes ----------------------------------------------------------------------------

# hs_measure OUT PORT PID: one tlshs run against a server pinned to HS_SERVER_CPU.
hs_measure() {
	taskset -c "$HS_CLIENT_CPU" "$WORK/bin/tlshs" -addr "127.0.0.1:$2" -pid "$3" -insecure \
		-curves x25519,default -c "$HS_CLIENTS" -duration "$HS_DURATION" -rounds "$HS_ROUNDS" \
		-source-ips 127.40.0.1-127.40.0.50 >"$1" 2>&1 &
	local pid=$!
	BL_PIDS+=("$pid") # stopped by the cleanup if the run is interrupted
	wait "$pid" || log "tlshs failed (status $?)"
	bl_forget "$pid"
	cat "$1"
}

# hs_step: HS_RUNS times, Doorman and the reference crypto/tls server (tlshs -serve, a
# goroutine per connection), both pinned to HS_SERVER_CPU, measured one after the other
# (the order alternating by run).
hs_step() {
	echo
	local i ref_port=$((BACKEND_PORT - 1)) ref_pid
	taskset -c "$HS_SERVER_CPU" "$WORK/bin/tlshs" -serve "127.0.0.1:$ref_port" -cert "$WORK/certs/doorman.pem" \
		-key "$WORK/certs/doorman-key.pem" >"$WORK/ref-server.log" 2>&1 &
	ref_pid=$!
	BL_PIDS+=("$ref_pid") # stopped by the cleanup if this step is interrupted
	for i in $(seq 1 "$HS_RUNS"); do
		start_doorman "hs$i" taskset -c "$HS_SERVER_CPU"
		log "tlshs $i/$HS_RUNS: Doorman pid $DOORMAN_PID and the reference server pid $ref_pid on core(s) $(awk '/^Cpus_allowed_list/ {print $2}' "/proc/$DOORMAN_PID/status"), tlshs on core $HS_CLIENT_CPU; load average $(loadavg)"
		if [ $((i % 2)) = 1 ]; then
			hs_measure "$WORK/hs-$i.out" "$TLS_PORT" "$DOORMAN_PID"
			hs_measure "$WORK/hsref-$i.out" "$ref_port" "$ref_pid"
		else
			hs_measure "$WORK/hsref-$i.out" "$ref_port" "$ref_pid"
			hs_measure "$WORK/hs-$i.out" "$TLS_PORT" "$DOORMAN_PID"
		fi
		bl_stop_doorman
	done
	bl_stop_pid "$ref_pid"
	bl_forget "$ref_pid"
}

# ---- FETCH ---------------------------------------------------------------------------------

fetch_step() {
	echo
	bl_wait_backend_idle
	start_doorman fetch
	local i
	for i in $(seq 1 "$FETCH_RUNS"); do
		log "fetchbench $i/$FETCH_RUNS: $SIZE bytes, $ROUNDS rounds, Doorman 127.0.0.1:$DOORMAN_PORT (plain) and :$TLS_PORT (TLS), pid $DOORMAN_PID; load average $(loadavg)"
		timeout 300 "$WORK/bin/fetchbench" -direct "127.0.0.1:$BACKEND_PORT" -proxy "127.0.0.1:$DOORMAN_PORT" \
			-tls-proxy "127.0.0.1:$TLS_PORT" -cafile "$WORK/certs/ca.pem" -tls-backend-user t001 \
			-direct-tls "127.0.0.1:$BACKEND_IMAPS" \
			-user u001 -pass pw-u001 -size "$SIZE" -rounds "$ROUNDS" -proxy-pid "$DOORMAN_PID" |
			tee "$WORK/fetch-$i.out" || log "fetchbench failed (status $?)"
		echo
	done
	bl_stop_doorman
}

# ---- heap profiles -------------------------------------------------------------------------

# prof_top MODE PPROF_ARGS...: the top of the profile step's heap difference, in bytes.
prof_top() {
	local mode=$1
	shift
	go tool pprof -sample_index=inuse_space -unit=B -top "$@" -diff_base "$WORK/heap-$mode-k$PROFILE_K-before.prof" \
		"$WORK/bin/doorman.sym" "$WORK/heap-$mode-k$PROFILE_K-after.prof" 2>/dev/null
}
# prof_total K: the "accounting for" total of a prof_top, per session.
prof_total() { awk -v k="$1" '/accounting for/ {t = $5; sub(/B,?$/, "", t); printf "%.0f", t / k; exit}'; }

# profile_modes: the TLS modes, and plain when there is a plain baseline (PLAIN_KS).
profile_modes() {
	[ -n "$PLAIN_KS" ] && printf 'plain '
	echo "$MODES" | tr ' ' '\n' | grep -vx plain | tr '\n' ' '
}

profile_step() {
	echo
	local mode
	for mode in $(profile_modes); do
		MEMPROFILE_TO="$WORK/heap-$mode-k$PROFILE_K"
		DOORMAN_ARGS=(-memprofile "$WORK/heap.prof")
		log "heap profile: K=$PROFILE_K, $mode, doorman -memprofile (every allocation sampled)"
		idle_run p "$PROFILE_K" "$mode"
		DOORMAN_ARGS=()
		MEMPROFILE_TO=""
		log "  what the $PROFILE_K sessions hold, per session (heap in use after GC, after - before; pprof -diff_base):"
		prof_top "$mode" -nodecount=25 | awk -v k="$PROFILE_K" '
			/accounting for/ {t = $5; sub(/B,?$/, "", t); printf "    total %.0f B/session\n", t / k}
			$1 ~ /^-?[0-9.]+B$/ && $2 ~ /%$/ {v = $1; sub(/B$/, "", v); name = $0; for (i = 0; i < 5; i++) sub(/^ *[^ ]+ +/, "", name); printf "    %7.0f B  %s\n", v / k, name}' ||
			log "  (pprof failed)"
		[ "$mode" = plain ] || log "  of which crypto/tls's input buffers, grown for the ClientHello: rawInput $(prof_top "$mode" -focus=readFromUntil | prof_total "$PROFILE_K") B, hand $(prof_top "$mode" -focus=readRecordOrCCS -ignore=readFromUntil | prof_total "$PROFILE_K") B per session"
	done
}

# ---- run -----------------------------------------------------------------------------------

cp "$ROOT/bin/doorman" "$WORK/bin/doorman.sym" # the binary the profiles belong to
echo
# Estimates of the later steps' seconds, from runs on this machine (plus a margin).
HS_NEED=$((HS_RUNS * (2 * HS_ROUNDS * 2 * ($(echo "$HS_DURATION" | tr -dc 0-9) + 1) + 6)))
FETCH_NEED=$((FETCH_RUNS * (ROUNDS / 2 + 6) + 10))
PROFILE_NEED=0
[ "$PROFILE" = 1 ] && PROFILE_NEED=$(($(echo $(profile_modes) | wc -w) * ($(need_s "$PROFILE_K") + 5)))
idle_all $((HS_NEED + FETCH_NEED + PROFILE_NEED))
if [ $(($(elapsed) + HS_NEED)) -le "$BUDGET" ]; then hs_step; else log "skipping the handshake step: the time budget is used up"; fi
if [ $(($(elapsed) + FETCH_NEED)) -le "$BUDGET" ]; then fetch_step; else log "skipping fetchbench: the time budget is used up"; fi
if [ "$PROFILE" = 1 ]; then
	if [ $(($(elapsed) + PROFILE_NEED)) -le "$BUDGET" ]; then profile_step; else log "skipping the heap profiles: the time budget is used up"; fi
fi

# ---- summary -------------------------------------------------------------------------------

echo
echo "== idle sessions: per-run numbers (RSS in kB; B/session = delta*1024/K; memory classes from runtime/metrics after GC)"
column -t -s $'\t' "$RESULTS" 2>/dev/null || cat "$RESULTS"
echo
echo "== idle sessions: medians over runs (range)"
for k in $KS; do
	for mode in $(modes_at "$k"); do
		key=$mode/$k
		[ -n "${PER_AFTER[$key]:-}" ] || continue
		v=${PER_AFTER[$key]}
		echo "K=$k $mode  runs=$(echo $v | wc -w)  RSS/session after GC: median $(echo $v | tr ' ' '\n' | median) B ($(echo $v | tr ' ' '\n' | range_of); runs: ${v% })" \
			" raw: median $(echo ${PER_RAW[$key]} | tr ' ' '\n' | median) B" \
			" heap objects: median $(echo ${PER_OBJ[$key]} | tr ' ' '\n' | median) B  heap unused: median $(echo ${PER_HEAP[$key]} | tr ' ' '\n' | median) B" \
			" Doorman CPU/session: median $(echo ${PER_CPU[$key]} | tr ' ' '\n' | median) us"
	done
done
if ls "$WORK"/hs-*.out >/dev/null 2>&1; then
	echo
	echo "== full TLS 1.3 handshakes per server CPU-second (utime+stime), pooled over $(ls "$WORK"/hs-*.out | wc -l) runs x $HS_ROUNDS rounds"
	for srv in hs hsref; do
		name=Doorman
		[ $srv = hsref ] && name="crypto/tls reference"
		for g in x25519 default; do
			v=$(awk -v g="$g" '$1 ~ /^[0-9]+$/ && $2 == g {print $8}' "$WORK"/$srv-*.out)
			s=$(awk -v g="$g" '$1 ~ /^[0-9]+$/ && $2 == g {print $9}' "$WORK"/$srv-*.out)
			u=$(awk -v g="$g" '$1 ~ /^[0-9]+$/ && $2 == g {print $10}' "$WORK"/$srv-*.out)
			echo "$name, $g: median $(echo "$v" | median) hs/CPU-s ($(echo "$v" | range_of)); schedstat median $(echo "$s" | median); server core utilisation median $(echo "$u" | median)"
		done
		echo "$name: ratio default/x25519 per round: median $(sed -n 's/^RESULT ratio .*rounds: \(.*\))/\1/p' "$WORK"/$srv-*.out | tr ' ' '\n' | median) (rounds: $(sed -n 's/^RESULT ratio .*rounds: \(.*\))/\1/p' "$WORK"/$srv-*.out | tr '\n' ' '))"
	done
	# Doorman / reference, run by run (the two were measured one after the other)
	for g in x25519 default; do
		r=$(for f in "$WORK"/hs-*.out; do
			ref=${f/hs-/hsref-}
			[ -f "$ref" ] || continue
			awk -v g="$g" '$1 == "RESULT" && $2 == "curve=" g {split($4, kv, "="); print kv[2]}' "$f" "$ref" | paste -sd' ' | awk '{if ($2) printf "%.3f\n", $1 / $2}'
		done)
		echo "Doorman / reference, $g, per run: median $(echo "$r" | median) (runs: $(echo $r))"
	done
fi
if ls "$WORK"/fetch-*.out >/dev/null 2>&1; then
	echo
	echo "== FETCH through Doorman, $SIZE bytes, pooled over $(ls "$WORK"/fetch-*.out | wc -l) runs x $ROUNDS rounds"
	for p in plain tls-client tls-backend tls-both direct-tls; do
		awk -v p="$p" '$1 == "RESULT" && $2 == "path=" p {for (i = 3; i <= NF; i++) {split($i, kv, "="); if (kv[1] == "proxy_cpu_s") c += kv[2]; if (kv[1] == "schedstat_cpu_s") s += kv[2]; if (kv[1] == "relayed_GB") g += kv[2]; if (kv[1] == "median_MBps") m = m " " kv[2]}}
			END {if (g) printf "%-12s per-run median MB/s:%s; Doorman CPU %.2f s (ticks) / %.3f s (schedstat) for %.2f GB = %.3f / %.3f CPU-s per GB\n", p, m, c, s, g, c / g, s / g; else if (m) printf "%-12s per-run median MB/s:%s (not through Doorman)\n", p, m}' "$WORK"/fetch-*.out
	done
	for p in tls-client tls-backend tls-both direct-tls; do
		r=$(sed -n "s/^RESULT ratio $p\/plain median=\([0-9.]*\).*/\1/p" "$WORK"/fetch-*.out | tr '\n' ' ')
		[ -n "$r" ] && echo "ratio $p/plain: per-run medians $r"
	done
	# every round's ratio, pooled over the runs: the round lines have NAME_MBps NAME_cpu_ms
	# column pairs, plain first
	awk 'FNR == 1 {hdr = 0} /^round / {hdr = 1; n = 0; for (i = 3; i <= NF; i += 2) {name[++n] = $i; sub(/_MBps$/, "", name[n])}; next}
		hdr && $1 ~ /^[0-9]+$/ {for (j = 2; j <= n; j++) print name[j], $(1 + 2 * j) / $3}' "$WORK"/fetch-*.out |
		sort -k1,1 -k2,2g | awk '{a[$1] = a[$1] " " $2; c[$1]++} END {for (k in a) {split(substr(a[k], 2), v, " "); m = c[k] % 2 ? v[(c[k] + 1) / 2] : (v[c[k] / 2] + v[c[k] / 2 + 1]) / 2; printf "ratio %s/plain, all %d rounds pooled: median %.3f (%.3f-%.3f)\n", k, c[k], m, v[1], v[c[k]]}}' | sort
fi
log "done in $(elapsed)s (load average $(loadavg))"
