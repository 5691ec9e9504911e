#!/usr/bin/env bash
# bench/loginrate.sh: IMAP logins per second through one Doorman with the Redis passdb,
# auth cache off / cold / warm, against a fast fake backend (bench/fakeimap), with
# Doorman's CPU per login and the Redis commands (round trips) per login; and the same
# load straight at the fake backend (the ceiling of this machine and load generator).
#
#   bench/loginrate.sh                       # from anywhere; needs redis-server on PATH
#   RUNS=1 N=20000 bench/loginrate.sh        # a quick look
#
# What it does:
#   1. Builds doorman, doormanctl, bench/fakeimap and bench/loginrate into a work folder.
#   2. Starts a private redis-server (free port, no persistence) and imports N users with
#      `doormanctl import -format csv`: user uNNNNNN, password {SCHEME}pNNNNNN (PLAIN by
#      default: a real hash such as SHA512-CRYPT would dominate the CPU and measure the
#      hash, not the proxy), proxy=y host=127.0.0.1 port=<fakeimap>.
#   3. Starts fakeimap. RUNS times, in this order:
#        direct  loginrate at fakeimap (no proxy)
#        nocache a fresh Doorman with auth_cache_size 0, one pass over the N users
#        cold    a fresh Doorman with auth_cache_size CACHE_SIZE, a first pass (each user
#                logs in once: every lookup misses)
#        warm    the same Doorman, a second pass over the same users (every lookup hits)
#      A pass is `loginrate -pass`: WORKERS concurrent sessions, each connect → greeting
#      → LOGIN → tagged OK → LOGOUT → close, from 127.0.2.1-127.0.2.200 (TIME_WAIT).
#      For each: logins/s, login latency p50/p99, errors; CPU-µs per login of Doorman,
#      fakeimap, redis-server and the load generator (utime+stime deltas from /proc);
#      Redis commands per login = the delta of INFO commandstats calls (all commands but
#      the script's own INFO) ÷ successful logins, with the per-command breakdown.
#   4. Medians over the runs.
#
# Doorman's configuration: one IMAP listener, the redis passdb, disable_plaintext_auth no
# (plaintext LOGIN without TLS), log level warn, auth_penalty at its default (on with a
# redis passdb). The clients are NOT in login_trusted_networks, as real clients are not,
# so each login also reads the client's auth-penalty counter (a GET). TRUSTED=1 puts
# 127.0.0.0/8 in login_trusted_networks, which exempts them from the penalty.
#
# Environment: N (100000), RUNS (3), WORKERS (64), CACHE_SIZE (200000), SCHEME (PLAIN),
# TRUSTED (0), PIN (0; 1 = Doorman on CPU 1, everything else on CPU 0), PROFILE (0; 1 = the
# last run's cached Doorman runs with -cpuprofile doorman.cpuprofile in the work folder),
# MAXPASS (180s: a pass's time limit), REV (HEAD) or DOORMAN_BIN, BASE_PORT (21300:
# fakeimap, then Doorman on the next ports), KEEP=1 keeps the work folder.
set -euo pipefail

N=${N:-100000}
RUNS=${RUNS:-3}
WORKERS=${WORKERS:-64}
CACHE_SIZE=${CACHE_SIZE:-200000}
SCHEME=${SCHEME:-PLAIN}
TRUSTED=${TRUSTED:-0}
PIN=${PIN:-0}
BASE_PORT=${BASE_PORT:-21300}
KEEP=${KEEP:-0}
MAXPASS=${MAXPASS:-180s}
SRC=127.0.2.1-127.0.2.200

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/doorman-loginrate.XXXXXX)
export GOTOOLCHAIN=local

REDIS_PID="" FAKE_PID="" DOORMAN_PID=""
log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
stop_pid() { # stop_pid PID: TERM, wait
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
cleanup() {
	local rc=$?
	set +e
	stop_pid "$DOORMAN_PID"
	stop_pid "$FAKE_PID"
	stop_pid "$REDIS_PID"
	if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then echo "work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$PIN" = 1 ]; then
	PIN_D="taskset -c 1"
	PIN_O="taskset -c 0"
else
	PIN_D=""
	PIN_O=""
fi

# ---- build ---------------------------------------------------------------------------
# Doorman and doormanctl are built from the commit REV (default HEAD), extracted with git
# archive, so that uncommitted work in the tree neither breaks the build nor blurs what was
# measured; DOORMAN_BIN uses a ready binary instead. The bench tools come from the tree.
REV=${REV:-HEAD}
log "building into $WORK (doorman from $REV)"
go build -o "$WORK/" ./bench/fakeimap ./bench/loginrate
if [ -n "${DOORMAN_BIN:-}" ]; then
	cp "$DOORMAN_BIN" "$WORK/doorman"
	go build -o "$WORK/" ./tools/doormanctl
	DOORMAN_FROM="binary $DOORMAN_BIN"
else
	mkdir -p "$WORK/src"
	git archive "$REV" | tar -x -C "$WORK/src"
	(cd "$WORK/src" && go build -o "$WORK/" ./cmd/doorman ./tools/doormanctl)
	DOORMAN_FROM="commit $(git rev-parse --short "$REV")"
fi
GOVERSION=$(go version)

# ---- helpers ---------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; } # utime+stime, clock ticks
HZ=$(getconf CLK_TCK)
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
# cmdstats: "cmd calls" lines from INFO commandstats, without the script's own INFO.
cmdstats() { rcli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p' | grep -v '^info '; }
greets() { timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 4 <&3 | grep -q '^\* OK'" 2>/dev/null; }

# ---- redis + users -----------------------------------------------------------------------
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
$PIN_O redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
	--daemonize no --dir "$WORK/redis" --loglevel warning >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 100); do rcli PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
rcli PING | grep -q PONG || die "redis-server did not start"

FAKE_PORT=$BASE_PORT
log "writing $N users ({$SCHEME} passwords)"
case $SCHEME in
PLAIN) awk -v n="$N" -v port="$FAKE_PORT" 'BEGIN {
		print "user,password,host,port,proxy" > "'"$WORK"'/users.csv"
		for (i = 1; i <= n; i++) {
			u = sprintf("u%06d", i); p = sprintf("p%06d", i)
			print u ",{PLAIN}" p ",127.0.0.1," port ",y" > "'"$WORK"'/users.csv"
			print u ":" p > "'"$WORK"'/users.txt"
		}
	}' ;;
SSHA256) python3 - "$N" "$FAKE_PORT" "$WORK" <<'EOF'
import base64, hashlib, os, sys
n, port, work = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(work + "/users.csv", "w") as c, open(work + "/users.txt", "w") as t:
    c.write("user,password,host,port,proxy\n")
    for i in range(1, n + 1):
        u, p = "u%06d" % i, "p%06d" % i
        salt = os.urandom(8)
        h = base64.b64encode(hashlib.sha256(p.encode() + salt).digest() + salt).decode()
        c.write("%s,{SSHA256}%s,127.0.0.1,%s,y\n" % (u, h, port))
        t.write("%s:%s\n" % (u, p))
EOF
	;;
*) die "SCHEME must be PLAIN or SSHA256" ;;
esac
"$WORK/doormanctl" -redis "127.0.0.1:$REDIS_PORT" import -format csv "$WORK/users.csv" >&2
log "redis: $(rcli DBSIZE) keys, used_memory $(rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p')"

# ---- fake backend --------------------------------------------------------------------------
$PIN_O "$WORK/fakeimap" -addr "127.0.0.1:$FAKE_PORT" >"$WORK/fakeimap.log" 2>&1 &
FAKE_PID=$!
for _ in $(seq 1 50); do greets "$FAKE_PORT" && break; sleep 0.1; done
greets "$FAKE_PORT" || die "fakeimap did not start"

# ---- doorman ----------------------------------------------------------------------------------
DOORMAN_STARTS=0
start_doorman() { # start_doorman TAG CACHE [extra args]
	local tag=$1 cache=$2
	shift 2
	stop_pid "$DOORMAN_PID"
	DOORMAN_PID=""
	for _ in 1 2 3 4 5; do
		DOORMAN_STARTS=$((DOORMAN_STARTS + 1))
		DOORMAN_PORT=$((BASE_PORT + DOORMAN_STARTS))
		{
			echo "listeners:"
			echo "  - {name: imap, protocol: imap, address: \"127.0.0.1:$DOORMAN_PORT\"}"
			echo "passdb:"
			echo "  - {driver: redis, addrs: [\"127.0.0.1:$REDIS_PORT\"], key_prefix: \"doorman:\"}"
			echo "disable_plaintext_auth: no"
			echo "auth_cache_size: $cache"
			[ "$TRUSTED" = 1 ] && echo "login_trusted_networks: [127.0.0.0/8]"
			echo "log: {level: warn, format: json}"
		} >"$WORK/doorman.yaml"
		$PIN_D "$WORK/doorman" -c "$WORK/doorman.yaml" "$@" >"$WORK/doorman-$tag.log" 2>&1 &
		DOORMAN_PID=$!
		for _ in $(seq 1 100); do
			greets "$DOORMAN_PORT" && return 0
			kill -0 "$DOORMAN_PID" 2>/dev/null || break
			sleep 0.1
		done
		stop_pid "$DOORMAN_PID"
		DOORMAN_PID=""
	done
	die "Doorman did not start: $(tail -3 "$WORK/doorman-$tag.log")"
}

# ---- one pass ------------------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
printf 'run\tmode\tlogins\terrors\tsecs\tlogins_per_s\tp50_ms\tp99_ms\tdoorman_us_per_login\tfake_us_per_login\tredis_us_per_login\tloadgen_us_per_login\tredis_cmds_per_login\tredis_breakdown_per_login\n' >"$RESULTS"

# pass RUN MODE PORT: one loginrate pass, with CPU and Redis deltas.
pass() {
	local run=$1 mode=$2 port=$3
	local d0=0 d1=0 f0 f1 r0 r1 out res logins
	sleep 2 # let the previous pass's TIME_WAIT and GC settle a little
	cmdstats >"$WORK/cs0"
	[ -n "$DOORMAN_PID" ] && d0=$(ticks "$DOORMAN_PID")
	f0=$(ticks "$FAKE_PID")
	r0=$(ticks "$REDIS_PID")
	out=$($PIN_O "$WORK/loginrate" -addr "127.0.0.1:$port" -users "$WORK/users.txt" -n "$N" \
		-workers "$WORKERS" -pass -duration "$MAXPASS" -source-ips "$SRC")
	[ -n "$DOORMAN_PID" ] && d1=$(ticks "$DOORMAN_PID")
	f1=$(ticks "$FAKE_PID")
	r1=$(ticks "$REDIS_PID")
	cmdstats >"$WORK/cs1"
	echo "$out" >"$WORK/loginrate-r$run-$mode.txt"
	res=$(echo "$out" | grep '^RESULT')
	logins=$(echo "$res" | sed 's/.* logins=\([0-9]*\).*/\1/')
	get() { echo "$res" | sed "s/.* $1=\([0-9.]*\).*/\1/"; }
	local cmds breakdown
	read -r cmds breakdown < <(awk -v n="$logins" 'NR==FNR {a[$1]=$2; next} {d=$2-a[$1]; if (d>0) {t+=d; s=s sprintf("%s=%.3f,", $1, d/(n>0?n:1))}} END {printf "%.3f %s\n", t/(n>0?n:1), (s==""?"-":s)}' "$WORK/cs0" "$WORK/cs1")
	awk -v run="$run" -v mode="$mode" -v n="$logins" -v hz="$HZ" -v e="$(get errors)" -v secs="$(get secs)" \
		-v rate="$(get rate)" -v p50="$(get p50_ms)" -v p99="$(get p99_ms)" -v d="$((d1 - d0))" -v f="$((f1 - f0))" \
		-v r="$((r1 - r0))" -v l="$(get cpu_s)" -v cmds="$cmds" -v bd="$breakdown" 'BEGIN {
		if (n < 1) n = 1
		us = 1e6 / hz / n
		printf "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\n", run, mode, n, e, secs, rate, p50, p99,
			d * us, f * us, r * us, l * 1e6 / n, cmds, bd
	}' | tee -a "$RESULTS" >&2
	echo "$out" | grep '^error' | head -5 >&2 || true
}

log "doorman: $DOORMAN_FROM; N=$N RUNS=$RUNS WORKERS=$WORKERS CACHE_SIZE=$CACHE_SIZE SCHEME=$SCHEME TRUSTED=$TRUSTED PIN=$PIN; $GOVERSION; load $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$RUNS"); do
	log "run $run: direct (load $(cut -d' ' -f1-3 /proc/loadavg))"
	pass "$run" direct "$FAKE_PORT"
	log "run $run: nocache"
	start_doorman "r$run-nocache" 0
	pass "$run" nocache "$DOORMAN_PORT"
	log "run $run: cold + warm"
	if [ "${PROFILE:-0}" = 1 ] && [ "$run" = "$RUNS" ]; then
		start_doorman "r$run-cache" "$CACHE_SIZE" -cpuprofile "$WORK/doorman.cpuprofile"
	else
		start_doorman "r$run-cache" "$CACHE_SIZE"
	fi
	pass "$run" cold "$DOORMAN_PORT"
	pass "$run" warm "$DOORMAN_PORT"
	stop_pid "$DOORMAN_PID"
	DOORMAN_PID=""
done

# ---- medians -------------------------------------------------------------------------------
echo
echo "== raw ($RESULTS)"
column -t -s$'\t' "$RESULTS"
echo
echo "== medians over $RUNS runs"
printf 'mode\tlogins_per_s\tp50_ms\tp99_ms\tdoorman_us_per_login\tfake_us\tredis_us\tloadgen_us\tredis_cmds_per_login\n' >"$WORK/medians.tsv"
for mode in direct nocache cold warm; do
	med() { awk -F'\t' -v m="$mode" -v c="$1" 'NR>1 && $2==m {print $c}' "$RESULTS" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$(med 6)" "$(med 7)" "$(med 8)" "$(med 9)" "$(med 10)" "$(med 11)" "$(med 12)" "$(med 13)" >>"$WORK/medians.tsv"
done
column -t -s$'\t' "$WORK/medians.tsv"
