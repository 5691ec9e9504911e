#!/usr/bin/env bash
# bench/compare.sh: Doorman side by side with Dovecot's proxy and nginx's mail proxy, and
# with the backend reached directly, in one run on one machine. Writes one markdown report
# (ratios first, then the raw figures) to bench/results/<date>-compare-<mode>.md and prints it.
#
#   bench/compare.sh                      # as root, from anywhere; `make bench` runs it short
#   MODE=full bench/compare.sh            # `make bench-full`: N = 1k, 2k, 4k, 8k, more rounds
#
# Targets: direct (no proxy), doorman, dovecot (a private Dovecot 2.3 instance that only
# proxies: service imap-login { service_count = 0, process_min_avail = 2, client_limit =
# 9000 }, passdb proxy field with password forwarding) and nginx (the mail module, 2
# workers, auth_http answered by bench/authhttp, which checks the same passwords). Every
# proxy runs on the same machine, is started and configured here, and is stopped on exit.
#
# Backends: bench/fakeimap (every login accepted, one message held in memory and written at
# memory speed) for everything that should measure the proxy alone: idle memory, logins,
# the raw relay stream, stalled readers; a private Dovecot (bin/devbackend) for FETCH and
# APPEND of a real 20 MB message, and for POP3, Submission and LMTP.
#
# Steps (each proxy fresh where memory is measured):
#   1. idle: for each N in KS and each proxy: 20 warm-up sessions, settle, memory before;
#      N sessions from imapload processes of at most PER_PROC sessions each (many 127.x
#      source addresses), each its own user: LOGIN, SELECT INBOX, IDLE; settle; memory
#      after; NOOP check of every session. Memory is RSS and PSS from /proc/PID/smaps_rollup
#      summed over the proxy's processes that hold sessions (Doorman: its one process;
#      Dovecot: the imap-login processes; nginx: the workers), (after - before) / N. For
#      Doorman also after SIGUSR1 (Go GC + return of free memory to the kernel).
#   2. logins (fake backend): loginrate at LOGIN_RATE logins/s for LOGIN_SECS through each
#      target: login latency p50/p99/p999 and the proxy's CPU per login (utime+stime of all
#      its processes: Dovecot's whole instance incl. auth; nginx's master and workers, and
#      authhttp reported apart); then unpaced with MAX_WORKERS workers: the login rate.
#   3. bulk (Dovecot backend): fetchbench -append, FETCH_ROUNDS interleaved rounds of a
#      FETCH_SIZE-byte FETCH and APPEND direct vs through each proxy; MB/s ratio and the
#      proxy's CPU seconds per GB.
#   4. stream (fake backend): the same FETCH from the fake backend: a raw relay stream.
#   5. stalled readers (fake backend): STALL_N sessions through a fresh proxy each send
#      FETCH of the FETCH_SIZE-byte message and never read; the proxy's memory before,
#      STALL_SECS later (during) and after the clients close, and the kernel's TCP memory.
#   6. POP3 and Submission (Dovecot backend): OTHER_N idle sessions through each proxy
#      (POP3 USER/PASS; Submission EHLO, AUTH PLAIN), memory per session as in step 1.
#   7. POP3 and Submission logins (Dovecot backend): as step 2 for each protocol of
#      OTHER_LOGIN_PROTOS, through each target, at OTHER_LOGIN_RATE logins/s for
#      OTHER_LOGIN_SECS, then unpaced for OTHER_MAX_SECS (POP3 USER/PASS, QUIT; Submission
#      EHLO, AUTH PLAIN, QUIT). The backend's own logins (a pop3 or submission process per
#      session) bound the rates; the proxy's CPU per login is the figure.
#   8. POP3 and Submission bulk (Dovecot backend), OTHER_BULK_PROTOS: fetchbench -proto pop3
#      (RETR of a FETCH_SIZE-byte message, FETCH_ROUNDS rounds) and -proto submission (MAIL,
#      RCPT, DATA of a SUBMIT_SIZE-byte message, SUBMIT_ROUNDS rounds; the backend relays it to
#      devbackend's sink, which keeps every message in memory and on disk: about
#      (2 * SUBMIT_ROUNDS + 2) * SUBMIT_SIZE per proxy) direct vs through each proxy.
#   9. LMTP (Dovecot backend's LMTP, delivering into maildirs): Doorman and Dovecot's LMTP
#      proxy (lmtp_proxy = yes) running side by side, LMTP_ROUNDS rounds, each delivering
#      LMTP_N messages of LMTP_SIZE bytes (LMTP_RCPTS recipients each) over LMTP_C
#      connections (bench/lmtpload) directly and through each proxy in rotating order:
#      deliveries/s, latency p50/p99 and the proxy's CPU per delivery; medians of the
#      rounds, and of each round's ratio to direct. nginx has no LMTP. Needs Dovecot's LMTP
#      (dovecot-lmtpd); skipped, and said so, without it.
#   Between steps 1 and 2 the same idle step runs over implicit TLS at TLS_KS, and full TLS
#   handshakes per proxy CPU-second are measured (bench/tlshs; HS=0 skips it). TLS offers
#   X25519 only: the OpenSSL 3.0 behind Dovecot and nginx has no ML-KEM.
#
# STEPS picks the steps to run, by name: idle tls hs logins cmds bulk stream stall other
# other_logins other_bulk lmtp (all by default), e.g. STEPS="lmtp" for LMTP alone.
#
# cmds: bench/cmdmix drives a mix of IMAP commands (NOOP, FETCH of flags and of a header,
# UID SEARCH, STATUS, CHECK) over CMD_SESSIONS logged-in sessions at CMD_RATE commands/s
# for CMD_SECS, straight at the Dovecot backend and through each proxy, CMD_ROUNDS rounds
# in rotating order: each command's p50/p99 and the latency each proxy adds (proxied -
# direct, medians over the rounds). The users' INBOXes are seeded with 20 small messages.
#
# Environment: MODE (short|full), STEPS, KS, TLS_KS ("" skips), HS, RUNS (idle rounds;
# medians), TARGETS, OTHER_PROTOS ("pop3 submission"; "" skips), OTHER_N (500 short, 1000
# full), LOGIN_RATE (1000), LOGIN_SECS, MAX_WORKERS (32), MAX_SECS, FETCH_SIZE (20000000),
# FETCH_ROUNDS, STALL_N (100), STALL_SECS (10), OTHER_LOGIN_PROTOS ("pop3" short, "pop3
# submission" full; "" skips), OTHER_LOGIN_RATE (100), OTHER_LOGIN_SECS (4 short, 10 full),
# OTHER_MAX_SECS (3 short, 5 full), OTHER_BULK_PROTOS ("pop3" short, "pop3 submission" full;
# "" skips), SUBMIT_SIZE (5000000), SUBMIT_ROUNDS (5), LMTP_N (600 short, 3000 full), LMTP_C
# (4 short, 8 full), LMTP_SIZE (10000), LMTP_RCPTS (1), LMTP_ROUNDS (2 short, 3 full; 0
# skips), CMD_SESSIONS (20), CMD_RATE (1000), CMD_SECS (5 short, 15 full), CMD_ROUNDS (1
# short, 2 full), PER_PROC (4000), CONCURRENCY (16 per loader), PORT_BASE (24300: the run uses ports
# from there up to about PORT_BASE+200), OUT (report path), KEEP=1 keeps the work folder.
set -euo pipefail

MODE=${MODE:-short}
if [ "$MODE" = full ]; then
	KS=${KS:-"1000 2000 4000 8000"}
	TLS_KS=${TLS_KS-"1000 4000"}
	RUNS=${RUNS:-2}
	LOGIN_SECS=${LOGIN_SECS:-15}
	MAX_SECS=${MAX_SECS:-10}
	FETCH_ROUNDS=${FETCH_ROUNDS:-15}
	OTHER_N=${OTHER_N:-1000}
	OTHER_LOGIN_PROTOS=${OTHER_LOGIN_PROTOS-"pop3 submission"}
	OTHER_LOGIN_SECS=${OTHER_LOGIN_SECS:-10}
	OTHER_MAX_SECS=${OTHER_MAX_SECS:-5}
	OTHER_BULK_PROTOS=${OTHER_BULK_PROTOS-"pop3 submission"}
	LMTP_N=${LMTP_N:-3000}
	LMTP_C=${LMTP_C:-8}
	LMTP_ROUNDS=${LMTP_ROUNDS:-3}
	CMD_SECS=${CMD_SECS:-15}
	CMD_ROUNDS=${CMD_ROUNDS:-2}
else
	KS=${KS:-"1000 2000"}
	RUNS=${RUNS:-1}
	LOGIN_SECS=${LOGIN_SECS:-8}
	MAX_SECS=${MAX_SECS:-5}
	FETCH_ROUNDS=${FETCH_ROUNDS:-5}
	OTHER_N=${OTHER_N:-500}
	OTHER_LOGIN_PROTOS=${OTHER_LOGIN_PROTOS-"pop3"}
	OTHER_LOGIN_SECS=${OTHER_LOGIN_SECS:-4}
	OTHER_MAX_SECS=${OTHER_MAX_SECS:-3}
	OTHER_BULK_PROTOS=${OTHER_BULK_PROTOS-"pop3"}
	LMTP_N=${LMTP_N:-600}
	LMTP_C=${LMTP_C:-4}
	LMTP_ROUNDS=${LMTP_ROUNDS:-2}
	CMD_SECS=${CMD_SECS:-5}
	CMD_ROUNDS=${CMD_ROUNDS:-1}
fi
CMD_SESSIONS=${CMD_SESSIONS:-20}
CMD_RATE=${CMD_RATE:-1000}
TARGETS=${TARGETS:-"direct doorman dovecot nginx"}
LOGIN_RATE=${LOGIN_RATE:-1000}
TLS_KS=${TLS_KS-$(echo $KS | cut -d' ' -f1)} # N for the idle TLS step ("" skips it)
HS=${HS:-1}                                   # 1: the TLS handshake step
MAX_WORKERS=${MAX_WORKERS:-32}
FETCH_SIZE=${FETCH_SIZE:-20000000}
# Stalled readers: 100 through Dovecot and nginx, whose sockets let each stalled session pin
# 6-8 MB of kernel buffers (their send buffer to the client autotunes up to tcp_wmem's 4 MB,
# their receive buffer from the backend grows too; seen with ss -tm), so 1,000 of them would
# pass tcp_mem's limit (2.2 GB on a 23 GiB machine) and put the whole machine's TCP under
# memory pressure. Doorman bounds its sockets (relay.notsent_lowat, relay.backend_rcvbuf):
# the issue's 1,000 in MODE=full (STALL_N_DOORMAN).
STALL_N=${STALL_N:-100}
if [ "$MODE" = full ]; then STALL_N_DOORMAN=${STALL_N_DOORMAN:-1000}; else STALL_N_DOORMAN=${STALL_N_DOORMAN:-$STALL_N}; fi
STALL_SECS=${STALL_SECS:-10}
# Idle memory is read IDLE_WAIT seconds after the sessions are set up, for every proxy
# alike: the state an idle host stays in. Doorman returns a burst's garbage to the kernel
# once allocation has been quiet for 2 s, at most once per memory_trim_interval (10 s), so
# a reading taken sooner may land before that. The baseline is read after a GC (SIGUSR1 for
# Doorman; nothing for the others), so that what the first trim returns of the process's
# start-up garbage does not count against the sessions.
IDLE_WAIT=${IDLE_WAIT:-12}
OTHER_PROTOS=${OTHER_PROTOS-"pop3 submission"} # idle POP3 and Submission sessions ("" skips)
# Dovecot's POP3 and Submission logins start a process per session at the backend: a few
# hundred a second is its ceiling here, so the paced rate stays well below it.
OTHER_LOGIN_RATE=${OTHER_LOGIN_RATE:-100}
SUBMIT_SIZE=${SUBMIT_SIZE:-5000000}
SUBMIT_ROUNDS=${SUBMIT_ROUNDS:-5}
LMTP_SIZE=${LMTP_SIZE:-10000}
LMTP_RCPTS=${LMTP_RCPTS:-1}
STEPS_SET=${STEPS:+1}
STEPS=${STEPS:-"idle tls hs logins cmds bulk stream stall other other_logins other_bulk lmtp"}
PORT_BASE=${PORT_BASE:-24300}
WARMUP=20

# on STEP: STEP is in STEPS. has TARGET: TARGET is in TARGETS.
on() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
has() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }
for step in $STEPS; do
	case $step in idle | tls | hs | logins | cmds | bulk | stream | stall | other | other_logins | other_bulk | lmtp) ;;
	*) echo "compare.sh: unknown step $step in STEPS" >&2; exit 2 ;;
	esac
done
IDLE_KS=$KS
on idle || IDLE_KS=""
on tls || TLS_KS=""
on hs || HS=0
on other || OTHER_PROTOS=""
on other_logins || OTHER_LOGIN_PROTOS=""
on other_bulk || OTHER_BULK_PROTOS=""
on lmtp || LMTP_ROUNDS=0

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/doorman-compare.XXXXXX)
START=$SECONDS
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bl_init
cd "$ROOT"

PROXIES=$(echo "$TARGETS" | tr ' ' '\n' | grep -vx direct | tr '\n' ' ')
MAXK=$(echo $KS | tr ' ' '\n' | sort -n | tail -1)
NUSERS=$((MAXK > STALL_N ? MAXK : STALL_N))
NUSERS=$((NUSERS > 1000 ? NUSERS : 1000))
declare -A R # results: R[metric/target/N] = value

# Ports: fixed ones for the backends, then a new one for each proxy started (a proxy that
# closed connections itself leaves TIME_WAIT on its port).
FAKE_PORT=$PORT_BASE
BACKEND_PORT=$((PORT_BASE + 1))
BACKEND_POP3_PORT=$((PORT_BASE + 2))
BACKEND_SUBMISSION_PORT=$((PORT_BASE + 3))
BACKEND_LMTP_PORT=$((PORT_BASE + 4))
NEXT_PORT=$((PORT_BASE + 10))
# next_port: PORT (plain IMAP), PORT+1 (implicit TLS), PORT+2 (nginx's authhttp).
next_port() {
	while ! bl_port_free "$NEXT_PORT" || ! bl_port_free $((NEXT_PORT + 1)) || ! bl_port_free $((NEXT_PORT + 2)); do
		NEXT_PORT=$((NEXT_PORT + 3))
	done
	PORT=$NEXT_PORT
	TLS_PORT=$((PORT + 1))
	NEXT_PORT=$((NEXT_PORT + 3))
}

# start_proxy TARGET BACKEND_PORT [PROTO]: a fresh proxy (for PROTO: imap, pop3, submission
# or lmtp; default imap); sets PORT, PROXY_MAIN (the pid to stop),
# MEM_PIDS (a function name giving the processes holding sessions) and CPU_PIDS (all of
# the proxy's processes).
start_proxy() {
	local target=$1 be=$2 proto=${3:-imap}
	next_port
	case $target in
	doorman)
		bl_start_doorman "$PORT" "$be" "$proto"
		PROXY_MAIN=$DOORMAN_PID
		;;
	dovecot)
		bl_start_dovecot_proxy "$PORT" "$be" "$proto"
		PROXY_MAIN=$DPROXY_PID
		sleep 1 # process_min_avail: the second login process
		;;
	nginx)
		bl_start_nginx "$PORT" "$be" $((PORT + 2)) "$proto"
		PROXY_MAIN=$NGINX_PID
		;;
	*) die "unknown target $target" ;;
	esac
	PROXY_TARGET=$target
	PROXY_PROTO=$proto
}
stop_proxy() {
	bl_stop_pid "$PROXY_MAIN"
	bl_forget "$PROXY_MAIN"
	if [ "$PROXY_TARGET" = nginx ]; then
		bl_stop_pid "$AUTHHTTP_PID"
		bl_forget "$AUTHHTTP_PID"
	fi
	PROXY_MAIN=""
}
# mem_pids: the current proxy's processes that hold sessions.
mem_pids() {
	case $PROXY_TARGET in
	doorman) echo "$PROXY_MAIN" ;;
	dovecot) bl_children "$PROXY_MAIN" "$PROXY_PROTO-login" ;;
	nginx) bl_children "$PROXY_MAIN" nginx ;;
	esac
}
# cpu_pids: all of the current proxy's processes (not authhttp).
cpu_pids() { bl_tree "$PROXY_MAIN"; }
# gc: Doorman only: SIGUSR1 runs a GC and returns free memory to the kernel.
gc() {
	[ "$PROXY_TARGET" = doorman ] || return 0
	kill -USR1 "$PROXY_MAIN"
	sleep 1.5
}
# per N A B: (A - B) kB * 1024 / N bytes, rounded.
per() { awk -v a="$2" -v b="$3" -v n="$1" 'BEGIN {printf "%.0f", (a - b) * 1024 / n}'; }
# us_per TICKS N: clock ticks (10 ms) as microseconds per item, rounded.
us_per() { awk -v c="$1" -v n="$2" 'BEGIN {printf "%.0f", c * 10000 / n}'; }

log "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), open files $(ulimit -n), $(go version | cut -d' ' -f3)"
log "mode $MODE: STEPS=\"$STEPS\" KS=\"$KS\" RUNS=$RUNS TARGETS=\"$TARGETS\" LOGIN_RATE=$LOGIN_RATE FETCH_SIZE=$FETCH_SIZE FETCH_ROUNDS=$FETCH_ROUNDS STALL_N=$STALL_N"
command -v dovecot >/dev/null || die "dovecot is not installed (make bench installs it)"
command -v nginx >/dev/null || die "nginx is not installed (make bench installs nginx and libnginx-mod-mail)"
bl_build
REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+uncommitted changes')"
log "doorman $REV; $NUSERS users"
bl_users "$NUSERS"
bl_certs
bl_port_free "$FAKE_PORT" || die "port $FAKE_PORT is in use (set PORT_BASE)"
bl_port_free "$BACKEND_PORT" || die "port $BACKEND_PORT is in use (set PORT_BASE)"
bl_start_fake "$FAKE_PORT" "$FETCH_SIZE"
LMTP_BE=""
if [ "$LMTP_ROUNDS" -gt 0 ]; then
	if [ -x /usr/lib/dovecot/lmtp ]; then
		LMTP_BE=$BACKEND_LMTP_PORT
	else
		log "skipping the LMTP step: Dovecot's LMTP is not installed (apt-get install dovecot-lmtpd)"
		LMTP_ROUNDS=0
	fi
fi
bl_start_backend "$BACKEND_PORT" "$BACKEND_POP3_PORT" "$BACKEND_SUBMISSION_PORT" "$LMTP_BE"
log "fake backend 127.0.0.1:$FAKE_PORT, Dovecot backend 127.0.0.1:$BACKEND_PORT (POP3 :$BACKEND_POP3_PORT, Submission :$BACKEND_SUBMISSION_PORT, LMTP :$BACKEND_LMTP_PORT)"

# ---- 1. idle sessions ------------------------------------------------------------------

# idle_one RUN N TARGET [MODE]: MODE plain (default) or tls (implicit TLS, X25519 offered
# only: Dovecot's and nginx's OpenSSL 3.0 have no ML-KEM, so every proxy does the same
# key exchange).
idle_one() {
	local run=$1 k=$2 target=$3 mode=${4:-plain} tag="idle-r$1-$3-k$2-${4:-plain}"
	local m="" addr args=(-idle)
	start_proxy "$target" "$FAKE_PORT"
	addr=127.0.0.1:$PORT
	if [ "$mode" = tls ]; then
		m=tls_
		addr=127.0.0.1:$TLS_PORT
		args+=(-tls -insecure -curves x25519)
	fi
	bl_start_loaders "$addr" "$WARMUP" 30 "$tag-warm" "${args[@]}"
	bl_wait_loaders 60
	bl_settle $(mem_pids)
	local b0 b1 a0 a1 bg0 ag0
	gc
	read -r b0 b1 < <(bl_mem $(mem_pids))
	bg0=$b0
	bl_start_loaders "$addr" "$k" 40 "$tag" "${args[@]}"
	bl_wait_loaders $((k / 20 + 60))
	local est=$ESTABLISHED fail=$FAILED
	bl_settle $(mem_pids)
	sleep "$IDLE_WAIT"
	read -r a0 a1 < <(bl_mem $(mem_pids))
	gc
	read -r ag0 _ < <(bl_mem $(mem_pids))
	bl_stop_loaders
	local rss pss rssgc="-"
	rss=$(per "$k" "$a0" "$b0")
	pss=$(per "$k" "$a1" "$b1")
	[ "$target" = doorman ] && rssgc=$(per "$k" "$ag0" "$bg0")
	log "idle run $run $target $mode N=$k: established $est failed $fail; RSS $b0 -> $a0 kB = $rss B/session; PSS $b1 -> $a1 kB = $pss B/session; after GC $rssgc B/session; NOOP $NOOP_OK/$NOOP_CHECKED, dropped $DROPPED (procs: $(mem_pids | wc -w))"
	R[${m}idle_rss/$target/$k]+="$rss "
	R[${m}idle_pss/$target/$k]+="$pss "
	R[${m}idle_gc/$target/$k]+="$rssgc "
	R[${m}idle_ok/$target/$k]+="$est/$k,noop=$NOOP_OK/$NOOP_CHECKED "
	stop_proxy
}

for run in $(seq 1 "$RUNS"); do
	for k in $IDLE_KS; do
		for target in $PROXIES; do
			idle_one "$run" "$k" "$target"
		done
	done
done
for run in $(seq 1 "$RUNS"); do
	for k in $TLS_KS; do
		for target in $PROXIES; do
			idle_one "$run" "$k" "$target" tls
		done
	done
done

# ---- TLS handshakes ------------------------------------------------------------------------

hs_one() {
	local target=$1 out
	start_proxy "$target" "$FAKE_PORT"
	out=$("$WORK/bin/tlshs" -addr "127.0.0.1:$TLS_PORT" -pid "$(cpu_pids | tr ' ' ',')" -insecure -curves x25519 \
		-c 32 -duration 3s -rounds 3 -source-ips 127.73.0.1-127.73.0.250 2>&1) || log "tlshs $target failed: $(echo "$out" | tail -3)"
	echo "$out" >"$WORK/hs-$target.out"
	local res
	res=$(echo "$out" | grep '^RESULT curve=' | head -1 || true)
	R[hs/$target]=$(echo "$res" | tr ' ' '\n' | sed -n 's/^hs_per_cpu_s_median=//p')
	R[hs_range/$target]="$(echo "$res" | tr ' ' '\n' | sed -n 's/^min=//p')-$(echo "$res" | tr ' ' '\n' | sed -n 's/^max=//p')"
	log "TLS handshakes $target: $res"
	stop_proxy
}
if [ "$HS" = 1 ]; then
	echo >&2
	log "full TLS 1.3 handshakes (X25519, ECDSA P-256 certificate) per proxy CPU-second; load average $(loadavg)"
	for target in $PROXIES; do hs_one "$target"; done
fi

# ---- 2. logins (and 7., POP3 and Submission) -------------------------------------------

# login_one TARGET [PROTO]: paced and unpaced loginrate through TARGET: IMAP (default) from
# the fake backend, POP3 and Submission from the Dovecot backend. Results go to R[KEY/TARGET]
# for IMAP and R[PROTO_KEY/TARGET] for the others.
login_one() {
	local target=$1 proto=${2:-imap} addr be=$FAKE_PORT out m="" rate=$LOGIN_RATE secs=$LOGIN_SECS maxsecs=$MAX_SECS
	if [ "$proto" != imap ]; then
		m=${proto}_
		rate=$OTHER_LOGIN_RATE
		secs=$OTHER_LOGIN_SECS
		maxsecs=$OTHER_MAX_SECS
		be=$BACKEND_POP3_PORT
		[ "$proto" = submission ] && be=$BACKEND_SUBMISSION_PORT
	fi
	if [ "$target" = direct ]; then
		addr=127.0.0.1:$be
	else
		start_proxy "$target" "$be" "$proto"
		addr=127.0.0.1:$PORT
	fi
	# pids: the proxy's processes, read at the start and at the end of a run (a process that
	# ends in between is counted in its parent's children's times).
	pids() { [ "$target" = direct ] || cpu_pids; }
	lr() { "$WORK/bin/loginrate" -proto "$proto" -addr "$addr" -users "$WORK/users.txt" "$@" 2>&1; }
	# warm-up (auth caches, process start)
	lr -workers 8 -duration 2s -source-ips 127.70.0.1-127.70.0.250 >/dev/null || true
	local c0 c1 u0 u1 a0=0 a1=0
	c0=$(bl_cpu $(pids))
	u0=$(bl_ucpu $(pids))
	[ "$target" = nginx ] && a0=$(bl_cpu "$AUTHHTTP_PID")
	out=$(lr -workers 32 -rate "$rate" -duration "${secs}s" -source-ips 127.71.0.1-127.71.0.250) || log "loginrate failed: $out"
	c1=$(bl_cpu $(pids))
	u1=$(bl_ucpu $(pids))
	[ "$target" = nginx ] && a1=$(bl_cpu "$AUTHHTTP_PID")
	local res logins
	res=$(echo "$out" | grep '^RESULT' || true)
	get() { echo "$res" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
	logins=$(get logins)
	R[${m}lat_p50/$target]=$(get p50_ms)
	R[${m}lat_p99/$target]=$(get p99_ms)
	R[${m}lat_p999/$target]=$(get p999_ms)
	R[${m}paced_rate/$target]=$(get rate)
	R[${m}paced_errors/$target]=$(get errors)
	if [ "$target" != direct ] && [ -n "$logins" ] && [ "$logins" -gt 0 ]; then
		R[${m}cpu_login/$target]=$(us_per $((c1 - c0)) "$logins")
		R[${m}ucpu_login/$target]=$(us_per $((u1 - u0)) "$logins")
		[ "$target" = nginx ] && R[${m}cpu_login_auth/$target]=$(us_per $((a1 - a0)) "$logins")
	fi
	log "$proto logins $target at $rate/s: $res; proxy CPU $(((c1 - c0) * 10)) ms = ${R[${m}cpu_login/$target]:--} us/login (user space ${R[${m}ucpu_login/$target]:--} us)${R[${m}cpu_login_auth/$target]:+ (+ authhttp ${R[${m}cpu_login_auth/$target]} us)}"
	echo "$out" | grep '^error' | head -3 >&2 || true
	c0=$(bl_cpu $(pids))
	out=$(lr -workers "$MAX_WORKERS" -duration "${maxsecs}s" -source-ips 127.72.0.1-127.72.0.250) || log "loginrate failed: $out"
	c1=$(bl_cpu $(pids))
	res=$(echo "$out" | grep '^RESULT' || true)
	R[${m}max_rate/$target]=$(get rate)
	R[${m}max_errors/$target]=$(get errors)
	logins=$(get logins)
	if [ "$target" != direct ] && [ -n "$logins" ] && [ "$logins" -gt 0 ]; then
		R[${m}max_cpu_login/$target]=$(us_per $((c1 - c0)) "$logins")
	fi
	log "$proto logins $target unpaced, $MAX_WORKERS workers: $res; proxy CPU $(((c1 - c0) * 10)) ms = ${R[${m}max_cpu_login/$target]:--} us/login"
	echo "$out" | grep '^error' | head -3 >&2 || true
	[ "$target" = direct ] || stop_proxy
}
if on logins; then
	echo >&2
	log "logins (fake backend), load average $(loadavg)"
	for target in $TARGETS; do login_one "$target"; done
fi

# rotated ROUND FN TARGET...: FN ROUND TARGET for each target, starting one further along
# each round, so that no target is always first or last.
rotated() {
	local round=$1 fn=$2 i j
	shift 2
	for ((i = 0; i < $#; i++)); do
		j=$(((i + round - 1) % $# + 1))
		"$fn" "$round" "${!j}"
	done
}

# ---- command mix ----------------------------------------------------------------------------

# cmds_one ROUND TARGET: cmdmix through TARGET (a fresh proxy; direct: the backend itself).
cmds_one() {
	local round=$1 target=$2 addr out k=0 line p50 p99
	if [ "$target" = direct ]; then
		addr=127.0.0.1:$BACKEND_PORT
	else
		start_proxy "$target" "$BACKEND_PORT"
		addr=127.0.0.1:$PORT
	fi
	out=$(timeout 300 "$WORK/bin/cmdmix" -addr "$addr" -users "$WORK/users.txt" -sessions "$CMD_SESSIONS" -rate "$CMD_RATE" \
		-duration "${CMD_SECS}s" -source-ips 127.73.0.1-127.73.0.250 2>&1) || log "cmdmix $target failed: $(echo "$out" | tail -3)"
	echo "$out" >"$WORK/cmds-$round-$target.out"
	while IFS= read -r line; do
		CMD_NAMES[$k]=$(sed -n 's/^CMD name="\([^"]*\)".*/\1/p' <<<"$line")
		p50=$(sed -n 's/.* p50_ms=\([^ ]*\).*/\1/p' <<<"$line")
		p99=$(sed -n 's/.* p99_ms=\([^ ]*\).*/\1/p' <<<"$line")
		R[cmd_p50/$k/$target]+="$p50 "
		R[cmd_p99/$k/$target]+="$p99 "
		k=$((k + 1))
	done < <(grep '^CMD ' <<<"$out")
	log "commands round $round $target: $(grep '^RESULT' <<<"$out" || echo "no result")"
	[ "$target" = direct ] || stop_proxy
}
declare -a CMD_NAMES
if on cmds; then
	echo >&2
	log "command mix (Dovecot backend): $CMD_SESSIONS sessions, $CMD_RATE commands/s, ${CMD_SECS}s, $CMD_ROUNDS round(s); load average $(loadavg)"
	"$WORK/bin/cmdmix" -addr "127.0.0.1:$BACKEND_PORT" -users "$WORK/users.txt" -sessions "$CMD_SESSIONS" -seed 20 \
		-duration 1s >/dev/null 2>"$WORK/cmds-seed.err" || log "seeding the mailboxes failed: $(tail -3 "$WORK/cmds-seed.err")"
	for round in $(seq 1 "$CMD_ROUNDS"); do rotated "$round" cmds_one $TARGETS; done
fi

# ---- 3./4. bulk ----------------------------------------------------------------------------

# bulk_one TARGET BACKEND_PORT KIND: fetchbench through a fresh proxy.
bulk_one() {
	local target=$1 be=$2 kind=$3 out extra=()
	start_proxy "$target" "$be"
	[ "$kind" = dovecot ] && extra=(-append)
	out=$(timeout 600 "$WORK/bin/fetchbench" -direct "127.0.0.1:$be" -proxy "127.0.0.1:$PORT" -user u001 -pass pw-u001 \
		-size "$FETCH_SIZE" -rounds "$FETCH_ROUNDS" -proxy-pid "$(cpu_pids | tr ' ' ',')" "${extra[@]}" 2>&1) ||
		log "fetchbench $target $kind failed: $(echo "$out" | tail -3)"
	echo "$out" >"$WORK/bulk-$kind-$target.out"
	local f c a
	f=$(echo "$out" | grep '^RESULT size=' || true)
	c=$(echo "$out" | grep '^RESULT proxy_cpu_s=' || true)
	a=$(echo "$out" | grep '^RESULT append' || true)
	kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
	R[$kind-fetch_ratio/$target]=$(kv "$f" ratio_median)
	R[$kind-fetch_direct/$target]=$(kv "$f" direct_median_MBps)
	R[$kind-fetch_proxy/$target]=$(kv "$f" proxy_median_MBps)
	R[$kind-fetch_cpu/$target]=$(kv "$c" cpu_s_per_GB)
	R[$kind-fetch_sched/$target]=$(kv "$c" schedstat_cpu_s_per_GB)
	if [ -n "$a" ]; then
		R[$kind-append_ratio/$target]=$(kv "$a" ratio_median)
		R[$kind-append_direct/$target]=$(kv "$a" direct_median_MBps)
		R[$kind-append_proxy/$target]=$(kv "$a" proxy_median_MBps)
		R[$kind-append_cpu/$target]=$(kv "$a" cpu_s_per_GB)
	fi
	log "bulk $kind $target: $f | $c${a:+ | $a}"
	stop_proxy
}
if on bulk || on stream; then
	echo >&2
	log "bulk: FETCH and APPEND of $FETCH_SIZE bytes (Dovecot backend), then the raw stream (fake backend); load average $(loadavg)"
fi
if on bulk; then for target in $PROXIES; do bulk_one "$target" "$BACKEND_PORT" dovecot; done; fi
if on stream; then for target in $PROXIES; do bulk_one "$target" "$FAKE_PORT" fake; done; fi

# ---- 5. stalled readers --------------------------------------------------------------------

stall_one() {
	local target=$1 tag="stall-$1" STALL_N=$STALL_N
	[ "$target" = doorman ] && STALL_N=$STALL_N_DOORMAN
	R[stall_n/$target]=$STALL_N
	start_proxy "$target" "$STALL_FAKE_PORT"
	bl_start_loaders "127.0.0.1:$PORT" "$WARMUP" 50 "$tag-warm" -idle
	bl_wait_loaders 60
	bl_settle $(mem_pids)
	gc
	local b d dg a tcp0 tcp1
	read -r b _ < <(bl_mem $(mem_pids))
	tcp0=$(awk '$1=="TCP:" {for (i=2;i<NF;i++) if ($i=="mem") print $(i+1)}' /proc/net/sockstat)
	bl_start_loaders "127.0.0.1:$PORT" "$STALL_N" 51 "$tag" -stall "FETCH 1 BODY.PEEK[]" -check=false -rcvbuf 16384
	bl_wait_loaders $((STALL_N / 20 + 60))
	local est=$ESTABLISHED
	sleep "$STALL_SECS"
	read -r d _ < <(bl_mem $(mem_pids))
	gc
	read -r dg _ < <(bl_mem $(mem_pids))
	tcp1=$(awk '$1=="TCP:" {for (i=2;i<NF;i++) if ($i=="mem") print $(i+1)}' /proc/net/sockstat)
	R[stall_kernel/$target]=$(awk -v a="$tcp1" -v b="$tcp0" -v n="$STALL_N" 'BEGIN {printf "%.0f", (a - b) * 4096 / n / 1024}')
	bl_stop_loaders
	bl_settle $(mem_pids)
	sleep 2
	gc
	read -r a _ < <(bl_mem $(mem_pids))
	R[stall_during/$target]=$(per "$STALL_N" "$d" "$b")
	R[stall_during_gc/$target]=$(per "$STALL_N" "$dg" "$b")
	R[stall_after/$target]=$(per "$STALL_N" "$a" "$b")
	R[stall_est/$target]=$est
	R[stall_kb/$target]="$b / $d / $a"
	log "stalled readers $target: $est of $STALL_N stalled; RSS before $b kB, during $d kB (after GC $dg kB), after $a kB: ${R[stall_during/$target]} B/session during, ${R[stall_after/$target]} B/session left after; kernel TCP memory (all sockets of the machine) $tcp0 -> $tcp1 pages = ${R[stall_kernel/$target]} KB/session"
	stop_proxy
}
if on stall; then
	echo >&2
	log "stalled readers: $STALL_N sessions ($STALL_N_DOORMAN through Doorman) each FETCH $FETCH_SIZE bytes and stop reading; load average $(loadavg)"
	# A fake backend of its own whose sockets queue at most 128 KiB unsent (TCP_NOTSENT_LOWAT):
	# otherwise each stalled session also pins up to 4 MB in the backend's send queue, on
	# this machine, which a real backend would hold on its own host.
	STALL_FAKE_PORT=$((PORT_BASE + 5))
	bl_start_fake "$STALL_FAKE_PORT" "$FETCH_SIZE" -notsent-lowat 131072
	STALL_FAKE_PID=$FAKE_PID
	for target in $PROXIES; do stall_one "$target"; done
	bl_stop_pid "$STALL_FAKE_PID"
	bl_forget "$STALL_FAKE_PID"
fi

# ---- 6. POP3 and Submission: idle sessions ------------------------------------------------

# other_one PROTO TARGET: OTHER_N idle PROTO sessions (POP3: USER/PASS; Submission: EHLO,
# AUTH PLAIN) through a fresh proxy in front of the Dovecot backend.
other_one() {
	local proto=$1 target=$2 be tag="other-$1-$2"
	be=$BACKEND_POP3_PORT
	[ "$proto" = submission ] && be=$BACKEND_SUBMISSION_PORT
	start_proxy "$target" "$be" "$proto"
	bl_start_loaders "127.0.0.1:$PORT" "$WARMUP" 60 "$tag-warm" -proto "$proto"
	bl_wait_loaders 60
	bl_settle $(mem_pids)
	local b0 b1 a0 a1 bg ag
	gc
	read -r b0 b1 < <(bl_mem $(mem_pids))
	bg=$b0
	bl_start_loaders "127.0.0.1:$PORT" "$OTHER_N" 61 "$tag" -proto "$proto"
	bl_wait_loaders $((OTHER_N / 10 + 60))
	local est=$ESTABLISHED lat outs=("${LOADER_OUTS[@]:$NEW_FROM}")
	bl_settle $(mem_pids)
	sleep "$IDLE_WAIT"
	read -r a0 a1 < <(bl_mem $(mem_pids))
	gc
	read -r ag _ < <(bl_mem $(mem_pids))
	bl_stop_loaders
	lat=$(grep -h login_latency "${outs[@]}" 2>/dev/null | head -1 | sed 's/.*login_latency //; s/ (.*//' || true)
	R[other_rss/$proto/$target]=$(per "$OTHER_N" "$a0" "$b0")
	R[other_pss/$proto/$target]=$(per "$OTHER_N" "$a1" "$b1")
	[ "$target" = doorman ] && R[other_gc/$proto/$target]=$(per "$OTHER_N" "$ag" "$bg")
	R[other_ok/$proto/$target]="$est/$OTHER_N,noop=$NOOP_OK/$NOOP_CHECKED"
	log "idle $proto $target N=$OTHER_N: established $est (login latency $lat); RSS ${R[other_rss/$proto/$target]} B/session, PSS ${R[other_pss/$proto/$target]} B/session${R[other_gc/$proto/$target]:+, after GC ${R[other_gc/$proto/$target]} B/session}; NOOP $NOOP_OK/$NOOP_CHECKED"
	stop_proxy
}
if [ -n "$OTHER_PROTOS" ]; then
	echo >&2
	log "idle POP3 and Submission sessions (Dovecot backend), N=$OTHER_N; load average $(loadavg)"
	for proto in $OTHER_PROTOS; do
		for target in $PROXIES; do other_one "$proto" "$target"; done
	done
fi

# ---- 7. POP3 and Submission: logins --------------------------------------------------------

if [ -n "$OTHER_LOGIN_PROTOS" ]; then
	echo >&2
	log "POP3 and Submission logins (Dovecot backend) at $OTHER_LOGIN_RATE/s, then unpaced; load average $(loadavg)"
	for proto in $OTHER_LOGIN_PROTOS; do
		for target in $TARGETS; do login_one "$target" "$proto"; done
	done
fi

# ---- 8. POP3 and Submission: bulk -----------------------------------------------------------

# bulk_other PROTO TARGET: fetchbench -proto PROTO, direct vs through a fresh proxy (Dovecot
# backend). POP3 RETRs u002's INBOX (emptied and given the one message first); Submission
# sends as u003 to itself.
bulk_other() {
	local proto=$1 target=$2 be out size rounds user extra=()
	case $proto in
	pop3)
		be=$BACKEND_POP3_PORT size=$FETCH_SIZE rounds=$FETCH_ROUNDS user=u002
		extra=(-imap "127.0.0.1:$BACKEND_PORT")
		;;
	submission) be=$BACKEND_SUBMISSION_PORT size=$SUBMIT_SIZE rounds=$SUBMIT_ROUNDS user=u003 ;;
	esac
	start_proxy "$target" "$be" "$proto"
	out=$(timeout 600 "$WORK/bin/fetchbench" -proto "$proto" -direct "127.0.0.1:$be" -proxy "127.0.0.1:$PORT" \
		-user "$user" -pass "pw-$user" -size "$size" -rounds "$rounds" -proxy-pid "$(cpu_pids | tr ' ' ',')" "${extra[@]}" 2>&1) ||
		log "fetchbench $proto $target failed: $(echo "$out" | tail -3)"
	echo "$out" >"$WORK/bulk-$proto-$target.out"
	local f c
	f=$(echo "$out" | grep '^RESULT size=' || true)
	c=$(echo "$out" | grep '^RESULT proxy_cpu_s=' || true)
	kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
	R[$proto-bulk_ratio/$target]=$(kv "$f" ratio_median)
	R[$proto-bulk_direct/$target]=$(kv "$f" direct_median_MBps)
	R[$proto-bulk_proxy/$target]=$(kv "$f" proxy_median_MBps)
	R[$proto-bulk_cpu/$target]=$(kv "$c" cpu_s_per_GB)
	R[$proto-bulk_sched/$target]=$(kv "$c" schedstat_cpu_s_per_GB)
	log "bulk $proto $target: $f | $c"
	stop_proxy
}
if [ -n "$OTHER_BULK_PROTOS" ]; then
	echo >&2
	log "POP3 RETR of $FETCH_SIZE bytes, Submission DATA of $SUBMIT_SIZE bytes (Dovecot backend); load average $(loadavg)"
	for proto in $OTHER_BULK_PROTOS; do
		for target in $PROXIES; do bulk_other "$proto" "$target"; done
	done
fi

# ---- 9. LMTP -------------------------------------------------------------------------------

LMTP_TARGETS=$(echo "$TARGETS" | tr ' ' '\n' | grep -vx nginx | tr '\n' ' ')
declare -A LMTP_ADDR LMTP_MAIN
# lmtp_run ROUND TARGET: lmtpload through TARGET's LMTP_ADDR; the proxy's CPU over the run.
lmtp_run() {
	local round=$1 target=$2 out c0=0 c1=0 res
	tree() { [ "$target" = direct ] || bl_tree "${LMTP_MAIN[$target]}"; }
	c0=$(bl_cpu $(tree))
	out=$("$WORK/bin/lmtpload" -addr "${LMTP_ADDR[$target]}" -users "$WORK/users.txt" -n "$LMTP_N" -c "$LMTP_C" \
		-size "$LMTP_SIZE" -rcpts "$LMTP_RCPTS" -source-ips 127.74.0.1-127.74.0.50 2>&1) || log "lmtpload $target failed: $out"
	c1=$(bl_cpu $(tree))
	res=$(echo "$out" | grep '^RESULT' || true)
	get() { echo "$res" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
	local n
	n=$(get deliveries)
	R[lmtp_rate/$target]+="$(get rate) "
	R[lmtp_p50/$target]+="$(get p50_ms) "
	R[lmtp_p99/$target]+="$(get p99_ms) "
	R[lmtp_errors/$target]+="$(get errors) "
	[ "$target" = direct ] || [ -z "$n" ] || [ "$n" = 0 ] || R[lmtp_cpu/$target]+="$(us_per $((c1 - c0)) "$n") "
	log "LMTP round $round $target: $res; proxy CPU $(((c1 - c0) * 10)) ms${n:+${LMTP_MAIN[$target]:+ = $(us_per $((c1 - c0)) "$n") us/delivery}}"
	echo "$out" | grep '^error' | head -3 >&2 || true
}
if [ "$LMTP_ROUNDS" -gt 0 ]; then
	echo >&2
	log "LMTP (Dovecot backend): $LMTP_ROUNDS rounds of $LMTP_N messages of $LMTP_SIZE bytes, $LMTP_RCPTS recipient(s) each, over $LMTP_C connections; load average $(loadavg)"
	LMTP_ADDR[direct]=127.0.0.1:$BACKEND_LMTP_PORT
	for target in $LMTP_TARGETS; do
		case $target in
		doorman)
			next_port
			bl_start_doorman "$PORT" "$BACKEND_LMTP_PORT" lmtp
			LMTP_MAIN[$target]=$DOORMAN_PID
			;;
		dovecot)
			next_port
			bl_start_dovecot_proxy "$PORT" "$BACKEND_LMTP_PORT" lmtp
			LMTP_MAIN[$target]=$DPROXY_PID
			;;
		direct) continue ;;
		esac
		LMTP_ADDR[$target]=127.0.0.1:$PORT
	done
	# warm-up: every connection's process (Dovecot's lmtp processes, the backend's) started
	for target in $LMTP_TARGETS; do
		"$WORK/bin/lmtpload" -addr "${LMTP_ADDR[$target]}" -users "$WORK/users.txt" -n $((LMTP_C * 10)) -c "$LMTP_C" \
			-size "$LMTP_SIZE" -source-ips 127.74.0.1-127.74.0.50 >/dev/null 2>&1 || true
	done
	for round in $(seq 1 "$LMTP_ROUNDS"); do
		rotated "$round" lmtp_run $LMTP_TARGETS
		# each round's ratio to direct, side by side
		if [ -n "${LMTP_ADDR[direct]:-}" ] && has direct; then
			d=$(echo ${R[lmtp_rate/direct]:-} | awk '{print $NF}')
			for target in $LMTP_TARGETS; do
				[ "$target" = direct ] && continue
				v=$(echo ${R[lmtp_rate/$target]:-} | awk '{print $NF}')
				R[lmtp_ratio/$target]+="$(awk -v a="$v" -v b="$d" 'BEGIN {if (b + 0 > 0) printf "%.3f", a / b; else print "-"}') "
			done
		fi
	done
	for target in $LMTP_TARGETS; do
		[ "$target" = direct ] && continue
		bl_stop_pid "${LMTP_MAIN[$target]}"
		bl_forget "${LMTP_MAIN[$target]}"
	done
fi

# ---- report --------------------------------------------------------------------------------

med() { echo ${R[$1]:-} | tr ' ' '\n' | grep -v '^-\?$' | median; }
# runs KEY: the values of each round, or "-".
runs() { local v; v=$(echo ${R[$1]:-}); echo "${v:--}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b}'; }
kb() { awk -v a="$1" 'BEGIN {if (a == "" || a == "-") print "-"; else printf "%.1f KB", a / 1024}'; }
# row3 LABEL D V N: a ratios row from Doorman's, Dovecot's and nginx's figures.
row3() { echo "| $1 | ${2:--} | ${3:--} | ${4:--} | $(ratio "$2" "$3") | $(ratio "$2" "$4") |"; }
# latrow LABEL PREFIX P RATE: a login latency row, each proxy's ÷ direct.
latrow() {
	local k=$2lat_$3
	echo "| $1 $3 at $4/s ÷ direct (direct ${R[$k/direct]:--} ms) | $(ratio "${R[$k/doorman]:-}" "${R[$k/direct]:-}") (${R[$k/doorman]:--} ms) | $(ratio "${R[$k/dovecot]:-}" "${R[$k/direct]:-}") (${R[$k/dovecot]:--} ms) | $(ratio "${R[$k/nginx]:-}" "${R[$k/direct]:-}") (${R[$k/nginx]:--} ms) | $(ratio "${R[$k/doorman]:-}" "${R[$k/dovecot]:-}") | $(ratio "${R[$k/doorman]:-}" "${R[$k/nginx]:-}") |"
}
# pname PROTO: the protocol's name in the report.
pname() { case $1 in pop3) echo POP3 ;; submission) echo Submission ;; *) echo "$1" ;; esac; }
# mb BYTES: in MB, for labels.
mb() { awk -v a="$1" 'BEGIN {printf "%g", a / 1e6}'; }
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/bench/results/$DATE-compare${MODE:+-$MODE}.md}
{
	echo "# Doorman vs Dovecot proxy vs nginx mail proxy vs direct ($DATE, $MODE)"
	echo
	echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r); $(go version | cut -d' ' -f3); dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1); $(nginx -v 2>&1 | sed 's/.*: //'); doorman $REV."
	echo "Command: \`MODE=$MODE${STEPS_SET:+ STEPS=\"$STEPS\"} KS=\"$KS\" RUNS=$RUNS LOGIN_RATE=$LOGIN_RATE FETCH_SIZE=$FETCH_SIZE FETCH_ROUNDS=$FETCH_ROUNDS STALL_N=$STALL_N OTHER_LOGIN_PROTOS=\"$OTHER_LOGIN_PROTOS\" OTHER_LOGIN_RATE=$OTHER_LOGIN_RATE OTHER_BULK_PROTOS=\"$OTHER_BULK_PROTOS\" SUBMIT_SIZE=$SUBMIT_SIZE LMTP_N=$LMTP_N LMTP_C=$LMTP_C LMTP_SIZE=$LMTP_SIZE LMTP_ROUNDS=$LMTP_ROUNDS STALL_N_DOORMAN=$STALL_N_DOORMAN IDLE_WAIT=$IDLE_WAIT CMD_SESSIONS=$CMD_SESSIONS CMD_RATE=$CMD_RATE CMD_SECS=$CMD_SECS CMD_ROUNDS=$CMD_ROUNDS bench/compare.sh\` ($(elapsed) s; load average at the end $(loadavg))."
	echo "The machine is shared with other work while this runs: absolute figures are noisy; the same-run ratios are the fair comparison."
	echo
	echo "## Ratios"
	echo
	echo "| Measure | Doorman | Dovecot proxy | nginx | Doorman ÷ Dovecot | Doorman ÷ nginx |"
	echo "|---|---|---|---|---|---|"
	for k in $IDLE_KS; do
		d=$(med "idle_rss/doorman/$k"); g=$(med "idle_gc/doorman/$k"); v=$(med "idle_rss/dovecot/$k"); n=$(med "idle_rss/nginx/$k")
		echo "| idle IMAP RSS/session, N=$k | $(kb "$d") (after GC $(kb "$g")) | $(kb "$v") | $(kb "$n") | $(ratio "$d" "$v") | $(ratio "$d" "$n") |"
	done
	for k in $IDLE_KS; do
		d=$(med "idle_pss/doorman/$k"); v=$(med "idle_pss/dovecot/$k"); n=$(med "idle_pss/nginx/$k")
		echo "| idle IMAP PSS/session, N=$k | $(kb "$d") | $(kb "$v") | $(kb "$n") | $(ratio "$d" "$v") | $(ratio "$d" "$n") |"
	done
	for k in $TLS_KS; do
		d=$(med "tls_idle_rss/doorman/$k"); g=$(med "tls_idle_gc/doorman/$k"); v=$(med "tls_idle_rss/dovecot/$k"); n=$(med "tls_idle_rss/nginx/$k")
		echo "| idle IMAP **TLS** RSS/session, N=$k | $(kb "$d") (after GC $(kb "$g")) | $(kb "$v") | $(kb "$n") | $(ratio "$d" "$v") | $(ratio "$d" "$n") |"
	done
	if [ "$HS" = 1 ]; then
		row3 "full TLS handshakes per proxy CPU-second (X25519)" "${R[hs/doorman]:-}" "${R[hs/dovecot]:-}" "${R[hs/nginx]:-}"
	fi
	if on logins; then
		for p in p50 p99 p999; do latrow "login latency" "" "$p" "$LOGIN_RATE"; done
		echo "| proxy CPU µs per login at $LOGIN_RATE/s | ${R[cpu_login/doorman]:--} | ${R[cpu_login/dovecot]:--} | ${R[cpu_login/nginx]:--} (+ authhttp ${R[cpu_login_auth/nginx]:--}) | $(ratio "${R[cpu_login/doorman]:-}" "${R[cpu_login/dovecot]:-}") | $(ratio "${R[cpu_login/doorman]:-}" "${R[cpu_login/nginx]:-}") |"
		row3 "of which user space (utime), µs per login at $LOGIN_RATE/s" "${R[ucpu_login/doorman]:-}" "${R[ucpu_login/dovecot]:-}" "${R[ucpu_login/nginx]:-}"
		row3 "proxy CPU µs per login, unpaced ($MAX_WORKERS workers)" "${R[max_cpu_login/doorman]:-}" "${R[max_cpu_login/dovecot]:-}" "${R[max_cpu_login/nginx]:-}"
		row3 "login rate, $MAX_WORKERS workers, /s (direct ${R[max_rate/direct]:--})" "${R[max_rate/doorman]:-}" "${R[max_rate/dovecot]:-}" "${R[max_rate/nginx]:-}"
	fi
	if on cmds && [ ${#CMD_NAMES[@]} -gt 0 ]; then
		# added KEY: the median of TARGET's figure minus direct's, in µs.
		added() { awk -v a="$(med "$1/$2")" -v b="$(med "$1/direct")" 'BEGIN {if (a == "" || b == "" || a == "-" || b == "-") print "-"; else {d = (a - b) * 1000; if (d >= 1000 || d <= -1000) printf "%+.1f ms", d / 1000; else printf "%+.0f µs", d}}'; }
		for k in "${!CMD_NAMES[@]}"; do
			echo "| \`${CMD_NAMES[$k]}\`: latency added over direct, p50 / p99 (direct $(med cmd_p50/$k/direct) / $(med cmd_p99/$k/direct) ms) | $(added cmd_p50/$k doorman) / $(added cmd_p99/$k doorman) | $(added cmd_p50/$k dovecot) / $(added cmd_p99/$k dovecot) | $(added cmd_p50/$k nginx) / $(added cmd_p99/$k nginx) | | |"
		done
	fi
	if on bulk; then
		for m in fetch append; do
			row3 "$m $(mb "$FETCH_SIZE") MB (Dovecot backend) MB/s ÷ direct" "${R[dovecot-${m}_ratio/doorman]:-}" "${R[dovecot-${m}_ratio/dovecot]:-}" "${R[dovecot-${m}_ratio/nginx]:-}"
			row3 "$m: proxy CPU s/GB" "${R[dovecot-${m}_cpu/doorman]:-}" "${R[dovecot-${m}_cpu/dovecot]:-}" "${R[dovecot-${m}_cpu/nginx]:-}"
		done
	fi
	if on stream; then
		row3 "raw relay stream (fake backend) MB/s ÷ direct" "${R[fake-fetch_ratio/doorman]:-}" "${R[fake-fetch_ratio/dovecot]:-}" "${R[fake-fetch_ratio/nginx]:-}"
		row3 "raw relay stream: proxy CPU s/GB" "${R[fake-fetch_cpu/doorman]:-}" "${R[fake-fetch_cpu/dovecot]:-}" "${R[fake-fetch_cpu/nginx]:-}"
	fi
	if on stall; then
		echo "| stalled readers ($STALL_N_DOORMAN through Doorman, $STALL_N through the others): RSS/session during | $(kb "${R[stall_during/doorman]:-}") (after GC $(kb "${R[stall_during_gc/doorman]:-}")) | $(kb "${R[stall_during/dovecot]:-}") | $(kb "${R[stall_during/nginx]:-}") | $(ratio "${R[stall_during/doorman]:-}" "${R[stall_during/dovecot]:-}") | $(ratio "${R[stall_during/doorman]:-}" "${R[stall_during/nginx]:-}") |"
		echo "| stalled readers: RSS/session left after they close | $(kb "${R[stall_after/doorman]:-}") | $(kb "${R[stall_after/dovecot]:-}") | $(kb "${R[stall_after/nginx]:-}") | | |"
	fi
	for proto in $OTHER_PROTOS; do
		d=${R[other_rss/$proto/doorman]:-}; v=${R[other_rss/$proto/dovecot]:-}; n=${R[other_rss/$proto/nginx]:-}
		echo "| idle $proto RSS/session, N=$OTHER_N | $(kb "$d") (after GC $(kb "${R[other_gc/$proto/doorman]:-}")) | $(kb "$v") | $(kb "$n") | $(ratio "$d" "$v") | $(ratio "$d" "$n") |"
	done
	if on stall; then
		echo "| stalled readers: kernel TCP memory/session during | ${R[stall_kernel/doorman]:--} KB | ${R[stall_kernel/dovecot]:--} KB | ${R[stall_kernel/nginx]:--} KB | $(ratio "${R[stall_kernel/doorman]:-}" "${R[stall_kernel/dovecot]:-}") | $(ratio "${R[stall_kernel/doorman]:-}" "${R[stall_kernel/nginx]:-}") |"
	fi
	for proto in $OTHER_LOGIN_PROTOS; do
		P=$(pname "$proto") m=${proto}_
		for p in p50 p99; do latrow "$P login latency" "$m" "$p" "$OTHER_LOGIN_RATE"; done
		echo "| $P: proxy CPU µs per login at $OTHER_LOGIN_RATE/s | ${R[${m}cpu_login/doorman]:--} | ${R[${m}cpu_login/dovecot]:--} | ${R[${m}cpu_login/nginx]:--} (+ authhttp ${R[${m}cpu_login_auth/nginx]:--}) | $(ratio "${R[${m}cpu_login/doorman]:-}" "${R[${m}cpu_login/dovecot]:-}") | $(ratio "${R[${m}cpu_login/doorman]:-}" "${R[${m}cpu_login/nginx]:-}") |"
		row3 "$P: of which user space, µs per login" "${R[${m}ucpu_login/doorman]:-}" "${R[${m}ucpu_login/dovecot]:-}" "${R[${m}ucpu_login/nginx]:-}"
		row3 "$P: proxy CPU µs per login, unpaced ($MAX_WORKERS workers)" "${R[${m}max_cpu_login/doorman]:-}" "${R[${m}max_cpu_login/dovecot]:-}" "${R[${m}max_cpu_login/nginx]:-}"
		row3 "$P login rate, $MAX_WORKERS workers, /s (direct ${R[${m}max_rate/direct]:--}; the backend's ceiling)" "${R[${m}max_rate/doorman]:-}" "${R[${m}max_rate/dovecot]:-}" "${R[${m}max_rate/nginx]:-}"
	done
	for proto in $OTHER_BULK_PROTOS; do
		case $proto in pop3) what="POP3 RETR $(mb "$FETCH_SIZE") MB" ;; submission) what="Submission DATA $(mb "$SUBMIT_SIZE") MB" ;; esac
		row3 "$what (Dovecot backend) MB/s ÷ direct" "${R[$proto-bulk_ratio/doorman]:-}" "${R[$proto-bulk_ratio/dovecot]:-}" "${R[$proto-bulk_ratio/nginx]:-}"
		row3 "$(echo "$what" | cut -d' ' -f1-2): proxy CPU s/GB" "${R[$proto-bulk_cpu/doorman]:-}" "${R[$proto-bulk_cpu/dovecot]:-}" "${R[$proto-bulk_cpu/nginx]:-}"
	done
	if [ "$LMTP_ROUNDS" -gt 0 ]; then
		d=$(med lmtp_rate/direct)
		echo "| LMTP deliveries/s ÷ direct, per round ($LMTP_C connections, $LMTP_SIZE B; direct $d/s) | $(med lmtp_ratio/doorman) ($(med lmtp_rate/doorman)/s) | $(med lmtp_ratio/dovecot) ($(med lmtp_rate/dovecot)/s) | no LMTP | $(ratio "$(med lmtp_ratio/doorman)" "$(med lmtp_ratio/dovecot)") | |"
		for p in p50 p99; do
			d=$(med lmtp_$p/direct)
			echo "| LMTP delivery latency $p ÷ direct (direct $d ms) | $(ratio "$(med lmtp_$p/doorman)" "$d") ($(med lmtp_$p/doorman) ms) | $(ratio "$(med lmtp_$p/dovecot)" "$d") ($(med lmtp_$p/dovecot) ms) | no LMTP | $(ratio "$(med lmtp_$p/doorman)" "$(med lmtp_$p/dovecot)") | |"
		done
		echo "| LMTP: proxy CPU µs per delivery | $(med lmtp_cpu/doorman) | $(med lmtp_cpu/dovecot) | no LMTP | $(ratio "$(med lmtp_cpu/doorman)" "$(med lmtp_cpu/dovecot)") | |"
	fi
	echo
	echo "RSS/PSS per session: (after - before) / N of the processes that hold sessions, summed (Doorman: its process; Dovecot: the *-login processes; nginx: the workers), userspace only; \"before\" after the warm-up sessions and a GC (Doorman: SIGUSR1; the others: none), \"after\" $IDLE_WAIT s after the sessions are set up (Doorman returns a burst's garbage by itself once it is quiet: memory_trim_interval); the kernel's socket memory (about 3.9 KB per idle TCP socket, two per proxied session) comes on top for every proxy alike. \"After GC\": Doorman after SIGUSR1 (runtime.GC + FreeOSMemory). CPU per login or delivery: utime+stime of all the proxy's processes (Dovecot: the whole proxy instance: master, the login or lmtp processes, auth, anvil, log, config, stats; nginx: master and workers, the auth_http responder given apart) over the run, ÷ logins or deliveries."
	echo
	k=$(echo $IDLE_KS | tr ' ' '\n' | sort -n | tail -1)
	d=$([ -n "$k" ] && med "idle_gc/doorman/$k" || echo -); r=$([ -n "$k" ] && med "idle_rss/doorman/$k" || echo -)
	if [ "$d" != "-" ] && [ -n "$d" ]; then
		echo "**Projection (not measured): 1,000,000 idle plain IMAP sessions** on one Doorman host, from the figure at N=$k: userspace $(awk -v a="$d" 'BEGIN {printf "%.2f", a * 1e6 / 2^30}') GiB after GC ($(awk -v a="$r" 'BEGIN {printf "%.2f", a * 1e6 / 2^30}') GiB without), plus the kernel floor of about 7.8 KB per session (two TCP sockets) = $(awk -v a="$d" 'BEGIN {printf "%.1f", (a + 7800) * 1e6 / 2^30}') GiB. Same projection for the Dovecot proxy: $(awk -v a="$(med "idle_rss/dovecot/$k")" 'BEGIN {printf "%.1f", (a + 7800) * 1e6 / 2^30}') GiB; nginx: $(awk -v a="$(med "idle_rss/nginx/$k")" 'BEGIN {printf "%.1f", (a + 7800) * 1e6 / 2^30}') GiB. Assumes the per-session cost stays linear past N=$k and one process per 9,000-session fd budget is not the limit (it is here: the open-file limit)."
		echo
	fi
	echo "## Raw figures"
	echo
	if [ -n "$IDLE_KS" ]; then
		echo "### Idle IMAP sessions (LOGIN, SELECT INBOX, IDLE; fake backend), bytes per session, medians over $RUNS run(s) (runs)"
		echo
		echo "| target | N | RSS | PSS | RSS after GC | established, NOOP ok |"
		echo "|---|---|---|---|---|---|"
		for k in $IDLE_KS; do
			for t in $PROXIES; do
				echo "| $t | $k | $(med "idle_rss/$t/$k") (${R[idle_rss/$t/$k]:-}) | $(med "idle_pss/$t/$k") (${R[idle_pss/$t/$k]:-}) | $(med "idle_gc/$t/$k") | ${R[idle_ok/$t/$k]:-} |"
			done
		done
		echo
	fi
	if [ -n "$TLS_KS" ]; then
		echo "### Idle IMAP sessions over implicit TLS (X25519, fake backend), bytes per session"
		echo
		echo "| target | N | RSS | PSS | RSS after GC | established, NOOP ok |"
		echo "|---|---|---|---|---|---|"
		for k in $TLS_KS; do
			for t in $PROXIES; do
				echo "| $t | $k | $(med "tls_idle_rss/$t/$k") (${R[tls_idle_rss/$t/$k]:-}) | $(med "tls_idle_pss/$t/$k") (${R[tls_idle_pss/$t/$k]:-}) | $(med "tls_idle_gc/$t/$k") | ${R[tls_idle_ok/$t/$k]:-} |"
			done
		done
		echo
	fi
	if [ "$HS" = 1 ]; then
		echo "### Full TLS 1.3 handshakes per proxy CPU-second (tlshs: 32 clients, 3 rounds of 3 s; CPU of all the proxy's processes; median (min-max))"
		echo
		for t in $PROXIES; do echo "- $t: ${R[hs/$t]:--} (${R[hs_range/$t]:--})"; done
		echo
	fi
	if on logins; then
		echo "### Logins (fake backend; loginrate: connect, greeting, LOGIN, LOGOUT, close; each login a user of its own in turn)"
		echo
		echo "| target | paced rate /s | p50 ms | p99 ms | p999 ms | errors | proxy CPU µs/login | unpaced rate /s ($MAX_WORKERS workers) | errors | proxy CPU µs/login unpaced |"
		echo "|---|---|---|---|---|---|---|---|---|---|"
		for t in $TARGETS; do
			echo "| $t | ${R[paced_rate/$t]:--} | ${R[lat_p50/$t]:--} | ${R[lat_p99/$t]:--} | ${R[lat_p999/$t]:--} | ${R[paced_errors/$t]:--} | ${R[cpu_login/$t]:--}${R[cpu_login_auth/$t]:+ + authhttp ${R[cpu_login_auth/$t]}} | ${R[max_rate/$t]:--} | ${R[max_errors/$t]:--} | ${R[max_cpu_login/$t]:--} |"
		done
		echo
	fi
	if on bulk || on stream; then
		echo "### Bulk ($FETCH_SIZE bytes, $FETCH_ROUNDS interleaved rounds each, new sessions every round; medians)"
		echo
		echo "| target | backend | FETCH direct MB/s | FETCH proxied MB/s | ratio | CPU s/GB (ticks) | (schedstat) | APPEND direct MB/s | APPEND proxied MB/s | ratio | CPU s/GB |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|"
		for kind in dovecot fake; do
			[ $kind = dovecot ] && ! on bulk && continue
			[ $kind = fake ] && ! on stream && continue
			for t in $PROXIES; do
				echo "| $t | $kind | ${R[$kind-fetch_direct/$t]:--} | ${R[$kind-fetch_proxy/$t]:--} | ${R[$kind-fetch_ratio/$t]:--} | ${R[$kind-fetch_cpu/$t]:--} | ${R[$kind-fetch_sched/$t]:--} | ${R[$kind-append_direct/$t]:--} | ${R[$kind-append_proxy/$t]:--} | ${R[$kind-append_ratio/$t]:--} | ${R[$kind-append_cpu/$t]:--} |"
			done
		done
		echo
	fi
	if on stall; then
		echo "### Stalled readers ($STALL_N_DOORMAN sessions through Doorman, $STALL_N through the others; FETCH of $FETCH_SIZE bytes from the fake backend, never read; RSS kB before / during ($STALL_SECS s in) / after)"
		echo
		echo "| target | stalled | RSS kB before / during / after | B/session during | B/session after | kernel TCP memory KB/session during |"
		echo "|---|---|---|---|---|---|"
		for t in $PROXIES; do
			echo "| $t | ${R[stall_est/$t]:--} | ${R[stall_kb/$t]:--} | ${R[stall_during/$t]:--} | ${R[stall_after/$t]:--} | ${R[stall_kernel/$t]:--} |"
		done
		echo
		echo "Kernel TCP memory is /proc/net/sockstat's (every TCP socket on the machine, both legs and the backend's side included) before and during, ÷ sessions: what the kernel holds for a stalled reader whatever the proxy does in user space."
		echo
	fi
	if [ -n "$OTHER_PROTOS" ]; then
		echo "### Idle POP3 and Submission sessions (Dovecot backend; POP3 USER/PASS, Submission EHLO + AUTH PLAIN, then held), N=$OTHER_N, bytes per session"
		echo
		echo "| protocol | target | RSS | PSS | RSS after GC | established, NOOP ok |"
		echo "|---|---|---|---|---|---|"
		for proto in $OTHER_PROTOS; do
			for t in $PROXIES; do
				echo "| $proto | $t | ${R[other_rss/$proto/$t]:--} | ${R[other_pss/$proto/$t]:--} | ${R[other_gc/$proto/$t]:--} | ${R[other_ok/$proto/$t]:--} |"
			done
		done
		echo
	fi
	if [ -n "$OTHER_LOGIN_PROTOS" ]; then
		echo "### POP3 and Submission logins (Dovecot backend; loginrate -proto: POP3 USER, PASS, QUIT; Submission EHLO, AUTH PLAIN, QUIT; paced at $OTHER_LOGIN_RATE/s for $OTHER_LOGIN_SECS s, unpaced for $OTHER_MAX_SECS s)"
		echo
		echo "| protocol | target | paced rate /s | p50 ms | p99 ms | p999 ms | errors | proxy CPU µs/login | unpaced rate /s ($MAX_WORKERS workers) | errors | proxy CPU µs/login unpaced |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|"
		for proto in $OTHER_LOGIN_PROTOS; do
			m=${proto}_
			for t in $TARGETS; do
				echo "| $proto | $t | ${R[${m}paced_rate/$t]:--} | ${R[${m}lat_p50/$t]:--} | ${R[${m}lat_p99/$t]:--} | ${R[${m}lat_p999/$t]:--} | ${R[${m}paced_errors/$t]:--} | ${R[${m}cpu_login/$t]:--}${R[${m}cpu_login_auth/$t]:+ + authhttp ${R[${m}cpu_login_auth/$t]}} | ${R[${m}max_rate/$t]:--} | ${R[${m}max_errors/$t]:--} | ${R[${m}max_cpu_login/$t]:--} |"
			done
		done
		echo
	fi
	if [ -n "$OTHER_BULK_PROTOS" ]; then
		echo "### POP3 and Submission bulk (Dovecot backend; fetchbench -proto: POP3 RETR of $FETCH_SIZE bytes, $FETCH_ROUNDS rounds; Submission MAIL, RCPT, DATA of $SUBMIT_SIZE bytes, $SUBMIT_ROUNDS rounds; new sessions every round; medians)"
		echo
		echo "| protocol | target | direct MB/s | proxied MB/s | ratio | CPU s/GB (ticks) | (schedstat) |"
		echo "|---|---|---|---|---|---|---|"
		for proto in $OTHER_BULK_PROTOS; do
			for t in $PROXIES; do
				echo "| $proto | $t | ${R[$proto-bulk_direct/$t]:--} | ${R[$proto-bulk_proxy/$t]:--} | ${R[$proto-bulk_ratio/$t]:--} | ${R[$proto-bulk_cpu/$t]:--} | ${R[$proto-bulk_sched/$t]:--} |"
			done
		done
		echo
	fi
	if [ "$LMTP_ROUNDS" -gt 0 ]; then
		echo "### LMTP deliveries (Dovecot backend's LMTP into maildirs; lmtpload: $LMTP_N messages of $LMTP_SIZE bytes, $LMTP_RCPTS recipient(s) each, over $LMTP_C connections (LHLO once, then MAIL, RCPT, DATA per message), $LMTP_ROUNDS rounds in rotating order; medians (rounds))"
		echo
		echo "| target | deliveries/s | ÷ direct, per round | p50 ms | p99 ms | errors | proxy CPU µs/delivery |"
		echo "|---|---|---|---|---|---|---|"
		for t in $LMTP_TARGETS; do
			echo "| $t | $(med lmtp_rate/$t) ($(runs lmtp_rate/$t)) | $(med lmtp_ratio/$t) ($(runs lmtp_ratio/$t)) | $(med lmtp_p50/$t) ($(runs lmtp_p50/$t)) | $(med lmtp_p99/$t) ($(runs lmtp_p99/$t)) | $(runs lmtp_errors/$t) | $(med lmtp_cpu/$t) ($(runs lmtp_cpu/$t)) |"
		done
		echo
		echo "Doorman streams each message to the backend as it arrives; Dovecot's LMTP proxy (lmtp_proxy = yes, one lmtp process per connection) takes the whole message first. nginx's mail proxy has no LMTP."
		echo
	fi
	not=""
	for step in idle tls hs logins cmds bulk stream stall other other_logins other_bulk lmtp; do on "$step" || not+="$step, "; done
	[ -z "$not" ] || echo "Steps not in this run (STEPS): ${not%, }."
	not=""
	for proto in pop3 submission; do
		case " $OTHER_LOGIN_PROTOS " in *" $proto "*) ;; *) not+="$(pname "$proto") logins, " ;; esac
		case " $OTHER_BULK_PROTOS " in *" $proto "*) ;; *) not+="$(pname "$proto") bulk, " ;; esac
	done
	[ "$LMTP_ROUNDS" -gt 0 ] || not+="LMTP, "
	[ -z "$not" ] || echo "Not measured in this run: ${not%, } (MODE=full runs them all)."
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo
cat "$OUT"
log "report: $OUT ($(elapsed) s)"
