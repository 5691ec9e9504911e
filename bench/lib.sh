# bench/lib.sh: shared shell functions for the bench scripts (source it; bash only).
#
# Starts and stops what a bench compares: a private Dovecot backend (bin/devbackend), the
# fast fake backend (bench/fakeimap), Doorman, Dovecot as a proxy (a private instance with
# service_count = 0 and a high client_limit; for LMTP, lmtp_proxy) and nginx's mail proxy
# with its auth_http responder (bench/authhttp); measures memory (RSS and PSS from
# /proc/PID/smaps_rollup, summed over a proxy's processes) and CPU (utime+stime from
# /proc/PID/stat); runs idle IMAP loads spread over imapload processes of at most PER_PROC
# sessions and many 127.x source addresses.
#
# The caller sets ROOT (the repository) and WORK (a private folder) first, then calls
# bl_init; bl_cleanup (installed as the EXIT trap by bl_init) stops everything started
# through these functions, and everything the caller added to BL_PIDS. log writes to
# stderr, or to the file descriptor BL_LOG_FD (1: stdout, for scripts whose log is their
# report).

PER_PROC=${PER_PROC:-4000}
CONCURRENCY=${CONCURRENCY:-16}
LOG_LEVEL=${LOG_LEVEL:-warn}

BL_PIDS=()    # processes to stop at exit (TERM, then KILL)
LOADER_PIDS=()
LOADER_OUTS=()

log() { printf '%s %s\n' "$(date +%T)" "$*" >&"${BL_LOG_FD:-2}"; }
die() {
	log "FATAL: $*"
	exit 1
}

bl_init() {
	START=${START:-$SECONDS}
	mkdir -p "$WORK/bin"
	chmod 755 "$WORK"
	trap bl_cleanup EXIT
	trap 'exit 130' INT TERM
}

# bl_stop_pid PID: SIGTERM, wait up to 20 s, then SIGKILL.
bl_stop_pid() {
	local p=$1
	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null || return 0
	for _ in $(seq 1 200); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

bl_cleanup() {
	local rc=$?
	set +e
	bl_stop_loaders >/dev/null 2>&1
	local i
	for ((i = ${#BL_PIDS[@]} - 1; i >= 0; i--)); do bl_stop_pid "${BL_PIDS[$i]}"; done
	BL_PIDS=()
	if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
		echo "work folder kept: $WORK" >&"${BL_LOG_FD:-2}"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}

# bl_forget PID: drop PID from the cleanup list (after stopping it).
bl_forget() {
	local out=() p
	for p in "${BL_PIDS[@]}"; do [ "$p" = "$1" ] || out+=("$p"); done
	BL_PIDS=("${out[@]}")
}

# elapsed: seconds since bl_init (or since START, if the caller set it).
elapsed() { echo $((SECONDS - START)); }

# bl_build [TOOLS...]: make build (doorman, devbackend, devcert) and the bench tools
# (bench/TOOL; by default those compare.sh uses) into $WORK/bin.
bl_build() {
	log "building (make build and the bench tools)"
	make -s -C "$ROOT" build >"$WORK/build.log" 2>&1 || {
		cat "$WORK/build.log"
		die "make build failed"
	}
	local t tools=("$@")
	[ $# -gt 0 ] || tools=(imapload fetchbench loginrate lmtpload cmdmix fakeimap authhttp tlshs)
	for t in "${tools[@]}"; do
		(cd "$ROOT" && go build -o "$WORK/bin/$t" "./bench/$t") || die "building bench/$t failed"
	done
}

# greets HOST PORT: a greeting (IMAP, POP3, SMTP or LMTP) arrives within 2 s.
greets() {
	timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2 && head -c 4 <&3 | grep -Eq '^(\* OK|\+OK|220)'" 2>/dev/null
}

# bl_wait_greets PORT PID WHAT: wait up to 30 s for a greeting on 127.0.0.1:PORT while PID lives.
bl_wait_greets() {
	local port=$1 pid=$2 what=$3
	for _ in $(seq 1 300); do
		greets 127.0.0.1 "$port" && return 0
		kill -0 "$pid" 2>/dev/null || die "$what exited (see $WORK)"
		sleep 0.1
	done
	die "$what does not greet on 127.0.0.1:$port"
}

# bl_port_free PORT: nothing listens on 127.0.0.1:PORT.
bl_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# bl_users N: $WORK/users.txt (user:password, u001..) for the load tools and authhttp.
bl_users() {
	local i u
	: >"$WORK/users.txt"
	for i in $(seq 1 "$1"); do
		u=$(printf 'u%03d' "$i")
		echo "$u:pw-$u" >>"$WORK/users.txt"
	done
}

# bl_passwd_file FILE BACKEND_PORT: a Dovecot-style passwd-file (Doorman and the Dovecot
# proxy read the same format) proxying every user of users.txt to 127.0.0.1:BACKEND_PORT,
# the client's password forwarded.
bl_passwd_file() {
	local file=$1 port=$2 u p
	: >"$file"
	while IFS=: read -r u p; do
		echo "$u:{PLAIN}$p::::::proxy host=127.0.0.1 port=$port" >>"$file"
	done <"$WORK/users.txt"
}

# ---- backends ------------------------------------------------------------------------

# bl_start_fake PORT SIZE [FLAGS...]: the fake backend (every login accepted; one message of
# SIZE bytes in memory; more fakeimap flags after). Sets FAKE_PID.
bl_start_fake() {
	"$WORK/bin/fakeimap" -addr "127.0.0.1:$1" -size "$2" "${@:3}" >"$WORK/fake-$1.out" 2>&1 &
	FAKE_PID=$!
	BL_PIDS+=("$FAKE_PID")
	bl_wait_greets "$1" "$FAKE_PID" "fakeimap"
}

# bl_start_backend PORT [POP3_PORT SUBMISSION_PORT [LMTP_PORT]]: a private Dovecot backend
# (bin/devbackend, engine/testenv's settings) with the users of users.txt: IMAP on PORT, and
# POP3, Submission and LMTP if their ports are given (LMTP delivers RCPT TO:<user@any.domain>
# into user's maildir; Submission relays to devbackend's sink, which keeps every message in
# memory and in WORK/backend/sink). Sets BACKEND_PID (devbackend; it stops Dovecot on SIGTERM).
bl_start_backend() {
	local args=(-dir "$WORK/backend" -port "$1" -users "$WORK/users.txt") protos=imap
	[ -n "${2:-}" ] && protos+=,pop3,submission && args+=(-pop3-port "$2" -submission-port "$3")
	[ -n "${4:-}" ] && protos+=,lmtp && args+=(-lmtp-port "$4")
	"$ROOT/bin/devbackend" "${args[@]}" -protocols "$protos" >"$WORK/backend.out" 2>"$WORK/backend.log" &
	BACKEND_PID=$!
	BL_PIDS+=("$BACKEND_PID")
	bl_wait_greets "$1" "$BACKEND_PID" "the Dovecot backend"
	[ -z "${2:-}" ] || bl_wait_greets "$2" "$BACKEND_PID" "the Dovecot backend's POP3"
	[ -z "${3:-}" ] || bl_wait_greets "$3" "$BACKEND_PID" "the Dovecot backend's Submission"
	[ -z "${4:-}" ] || bl_wait_greets "$4" "$BACKEND_PID" "the Dovecot backend's LMTP"
}

# bl_backend_procs NAME: how many processes called NAME the backend's Dovecot (a child of
# BACKEND_PID) runs.
bl_backend_procs() {
	local m
	m=$(pgrep -P "$BACKEND_PID" -x dovecot | head -1)
	if [ -n "$m" ]; then pgrep -c -P "$m" -x "$1" || true; else echo 0; fi
}

# bl_wait_backend_idle: the backend's imap processes of closed sessions have exited, all but
# two (at most 60 s).
bl_wait_backend_idle() {
	local n
	for _ in $(seq 1 120); do
		n=$(bl_backend_procs imap)
		[ "$n" -le 2 ] && return 0
		sleep 0.5
	done
	log "warning: $n backend imap processes still running"
}

# ---- proxies -------------------------------------------------------------------------
#
# With TLS_PORT set (and bl_certs run), each proxy also listens with implicit TLS (imaps)
# on 127.0.0.1:TLS_PORT, serving $WORK/certs/doorman.pem (bin/devcert's test certificate).

TLS_PORT=""

# bl_certs: a test CA and a certificate for 127.0.0.1 in $WORK/certs (bin/devcert).
bl_certs() {
	"$ROOT/bin/devcert" -dir "$WORK/certs" 2>"$WORK/devcert.log" || {
		cat "$WORK/devcert.log"
		die "devcert failed"
	}
	chmod 755 "$WORK/certs"
	chmod 644 "$WORK/certs"/*.pem
}

# bl_run_doorman CONFIG LOG PORT [WRAPPER...]: Doorman with CONFIG and DOORMAN_ARGS (e.g.
# -cpuprofile FILE), its output in LOG, under WRAPPER if given (e.g. taskset -c 0); waits up
# to 30 s for its greeting on 127.0.0.1:PORT. Sets DOORMAN_PID and DOORMAN_LOG. Returns 1 if
# Doorman could not bind its port (one left in TIME_WAIT, e.g. by an earlier run: Doorman's
# listener does not set SO_REUSEADDR), so the caller can try another; dies on any other
# failure.
DOORMAN_ARGS=()
bl_run_doorman() {
	local conf=$1 out=$2 port=$3
	shift 3
	"$@" "$ROOT/bin/doorman" -c "$conf" "${DOORMAN_ARGS[@]}" >"$out" 2>&1 &
	DOORMAN_PID=$!
	DOORMAN_LOG=$out
	BL_PIDS+=("$DOORMAN_PID")
	for _ in $(seq 1 300); do
		greets 127.0.0.1 "$port" && return 0
		kill -0 "$DOORMAN_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$DOORMAN_PID" 2>/dev/null && die "Doorman does not greet on 127.0.0.1:$port (see $out)"
	wait "$DOORMAN_PID" 2>/dev/null || true
	bl_forget "$DOORMAN_PID"
	if grep -q 'address already in use' "$out"; then
		log "Doorman cannot bind 127.0.0.1:$port ($(ss -Htan state time-wait "( sport = :$port )" | wc -l) TIME_WAIT sockets on that port)"
		return 1
	fi
	cat "$out"
	die "Doorman does not start on 127.0.0.1:$port"
}

# bl_stop_doorman: stops DOORMAN_PID (SIGTERM, then SIGKILL after 20 s) and says so if it had
# exited already, exits with an error, or logged warn or error lines (the "memory" lines
# SIGUSR1 logs at warn aside); such a log is kept as WORK/kept-NAME.
bl_stop_doorman() {
	local rc=0 nwarn nerr
	kill -0 "$DOORMAN_PID" 2>/dev/null || {
		log "Doorman $DOORMAN_PID was already gone (crash?)"
		tail -20 "$DOORMAN_LOG"
	}
	kill -TERM "$DOORMAN_PID" 2>/dev/null || true
	for _ in $(seq 1 200); do
		kill -0 "$DOORMAN_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$DOORMAN_PID" 2>/dev/null || true
	wait "$DOORMAN_PID" || rc=$?
	bl_forget "$DOORMAN_PID"
	[ $rc -eq 0 ] || log "Doorman exited with status $rc"
	nwarn=$(grep -v '"msg":"memory"' "$DOORMAN_LOG" | grep -c '"level":"warn"' || true)
	nerr=$(grep -c '"level":"error"\|panic' "$DOORMAN_LOG" || true)
	if [ "$nwarn" != 0 ] || [ "$nerr" != 0 ]; then
		log "Doorman log $DOORMAN_LOG: $nwarn warn, $nerr error lines; first ones:"
		grep -v '"msg":"memory"' "$DOORMAN_LOG" | grep '"level":"warn"\|"level":"error"\|panic' | head -5 | cut -c1-400
		cp "$DOORMAN_LOG" "$WORK/kept-$(basename "$DOORMAN_LOG")"
	fi
	DOORMAN_PID=""
}

# bl_start_doorman PORT BACKEND_PORT [PROTO]: Doorman in front of 127.0.0.1:BACKEND_PORT,
# listening for PROTO (imap, pop3, submission or lmtp; default imap). Sets DOORMAN_PID.
# For LMTP the recipients' domain is dropped before the lookup (auth_username_format %Ln),
# as the backend does.
bl_start_doorman() {
	local port=$1 be=$2 proto=${3:-imap} dir="$WORK/doorman-$1"
	mkdir -p "$dir"
	bl_passwd_file "$dir/users.passwd" "$be"
	cat >"$dir/doorman.yaml" <<EOF
listeners:
  - {name: $proto, protocol: $proto, address: "127.0.0.1:$port"}
EOF
	if [ "$proto" = lmtp ]; then echo 'auth_username_format: "%Ln"' >>"$dir/doorman.yaml"; fi
	if [ -n "$TLS_PORT" ] && [ "$proto" = imap ]; then
		cat >>"$dir/doorman.yaml" <<EOF
  - {name: imaps, protocol: imap, address: "127.0.0.1:$TLS_PORT", ssl: true}
ssl_cert: $WORK/certs/doorman.pem
ssl_key: $WORK/certs/doorman-key.pem
EOF
	fi
	cat >>"$dir/doorman.yaml" <<EOF
passdb:
  - {driver: passwd-file, path: users.passwd}
login_trusted_networks: [127.0.0.0/8]
log: {level: $LOG_LEVEL, format: json}
EOF
	# DOORMAN_CONFIG: more top-level YAML for Doorman, for A/B runs of a setting.
	[ -z "${DOORMAN_CONFIG:-}" ] || printf '%s\n' "$DOORMAN_CONFIG" >>"$dir/doorman.yaml"
	bl_run_doorman "$dir/doorman.yaml" "$dir/doorman.log" "$port" || die "Doorman cannot bind 127.0.0.1:$port"
}

# bl_start_dovecot_proxy PORT BACKEND_PORT [PROTO]: a private Dovecot instance that only
# proxies PROTO (imap, pop3 or submission; default imap) to 127.0.0.1:BACKEND_PORT (passdb
# proxy field, password forwarding), in Dovecot's high-performance login mode:
# service_count = 0, process_min_avail = 2 (the cores here), client_limit 9000. For lmtp:
# lmtp_proxy = yes, every recipient looked up in the same passdb (its domain dropped:
# auth_username_format %Ln), the lmtp service as Dovecot ships it (one connection per
# process, processes reused) with process_min_avail = 2. Sets DPROXY_PID (the master, in the
# foreground).
bl_start_dovecot_proxy() {
	local port=$1 be=$2 proto=${3:-imap} dir="$WORK/dproxy-$1"
	mkdir -p "$dir/state" "$dir/base"
	chmod 755 "$dir"
	bl_passwd_file "$dir/users.passwd" "$be"
	chown root:dovecot "$dir/users.passwd"
	chmod 640 "$dir/users.passwd"
	local ssl="ssl = no" imaps="port = 0" tlsname service
	case $proto in imap) tlsname=imaps ;; pop3) tlsname=pop3s ;; submission) tlsname=submissions ;; esac
	if [ -n "$TLS_PORT" ] && [ "$proto" = imap ]; then
		ssl="ssl = yes
ssl_cert = <$WORK/certs/doorman.pem
ssl_key = <$WORK/certs/doorman-key.pem"
		imaps="address = 127.0.0.1
    port = $TLS_PORT
    ssl = yes"
	fi
	if [ "$proto" = lmtp ]; then
		service="postmaster_address = postmaster@bench.invalid
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $port
  }
  process_min_avail = 2
}
protocol lmtp {
  lmtp_proxy = yes
  auth_username_format = %Ln
}"
	else
		service="service $proto-login {
  inet_listener $proto {
    address = 127.0.0.1
    port = $port
  }
  inet_listener $tlsname {
    $imaps
  }
  service_count = 0
  process_min_avail = 2
  client_limit = 9000
}"
	fi
	cat >"$dir/dovecot.conf" <<EOF
instance_name = bench-dproxy-$port
base_dir = $dir/base
state_dir = $dir/state
listen = 127.0.0.1
protocols = $proto
$ssl
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
log_path = $dir/dovecot.log
info_log_path = $dir/dovecot.log
default_vsz_limit = 1G
default_client_limit = 20000
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/users.passwd
}
userdb {
  driver = static
  args = uid=mail gid=mail home=$dir/home/%u
}
$service
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
	dovecot -F -c "$dir/dovecot.conf" >"$dir/dovecot.stderr" 2>&1 &
	DPROXY_PID=$!
	BL_PIDS+=("$DPROXY_PID")
	bl_wait_greets "$port" "$DPROXY_PID" "the Dovecot proxy"
}

# bl_start_nginx PORT BACKEND_PORT AUTH_PORT [PROTO]: nginx's mail proxy for PROTO (imap,
# pop3 or submission, which nginx calls smtp; default imap) with bench/authhttp (users.txt's
# passwords, backend 127.0.0.1:BACKEND_PORT) on AUTH_PORT; worker_processes 2 (the cores
# here), worker_connections 20000. Sets NGINX_PID (the master, daemon off) and AUTHHTTP_PID.
bl_start_nginx() {
	local port=$1 be=$2 auth=$3 proto=${4:-imap} dir="$WORK/nginx-$1" nproto
	[ "$proto" != lmtp ] || die "nginx's mail proxy has no LMTP"
	nproto=$proto
	[ "$proto" = submission ] && nproto=smtp
	mkdir -p "$dir"
	"$WORK/bin/authhttp" -addr "127.0.0.1:$auth" -users "$WORK/users.txt" -"$nproto" "127.0.0.1:$be" >"$dir/authhttp.out" 2>&1 &
	AUTHHTTP_PID=$!
	BL_PIDS+=("$AUTHHTTP_PID")
	local module
	module=$(ls /usr/lib/nginx/modules/ngx_mail_module.so /usr/share/nginx/modules/ngx_mail_module.so 2>/dev/null | head -1)
	[ -n "$module" ] || die "nginx's mail module is missing (apt-get install nginx libnginx-mod-mail)"
	local tls_server=""
	if [ -n "$TLS_PORT" ] && [ "$proto" = imap ]; then
		tls_server="server {
        listen 127.0.0.1:$TLS_PORT ssl;
        protocol imap;
        proxy on;
        ssl_certificate $WORK/certs/doorman.pem;
        ssl_certificate_key $WORK/certs/doorman-key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
    }"
	fi
	cat >"$dir/nginx.conf" <<EOF
load_module $module;
daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 20000;
}
mail {
    server_name bench.invalid;
    auth_http 127.0.0.1:$auth/auth;
    proxy_pass_error_message on;
    imap_capabilities IMAP4rev1 IDLE LITERAL+;
    smtp_auth plain login;
    proxy_smtp_auth on;
    xclient off;
    server {
        listen 127.0.0.1:$port;
        protocol $nproto;
        proxy on;
    }
    $tls_server
}
EOF
	nginx -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/nginx.stderr" 2>&1 &
	NGINX_PID=$!
	BL_PIDS+=("$NGINX_PID")
	bl_wait_greets "$port" "$NGINX_PID" "nginx"
}

# ---- measuring -----------------------------------------------------------------------

# bl_children PID NAME: PID's child processes called NAME (the kernel keeps 15 characters
# of a process name: submission-login is "submission-logi").
bl_children() { pgrep -P "$1" -x "${2:0:15}" | tr '\n' ' '; }
# bl_tree PID: PID and all its descendants.
bl_tree() {
	local p=$1 c
	echo -n "$p "
	for c in $(pgrep -P "$p"); do bl_tree "$c"; done
}

# bl_mem PIDS...: "RSS_kB PSS_kB" summed over the processes (smaps_rollup).
bl_mem() {
	local p f rss=0 pss=0 r s
	for p in "$@"; do
		f=/proc/$p/smaps_rollup
		[ -r "$f" ] || continue
		read -r r s < <(awk '/^Rss:/ {r = $2} /^Pss:/ {s = $2} END {print r + 0, s + 0}' "$f")
		rss=$((rss + r))
		pss=$((pss + s))
	done
	echo "$rss $pss"
}

# bl_cpu PIDS...: utime+stime summed, in clock ticks (10 ms), reaped children included.
bl_cpu() {
	local p t=0 v
	for p in "$@"; do
		v=$(awk '{sub(/.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$p/stat" 2>/dev/null) || continue
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

# bl_ucpu PIDS...: utime alone (user space, reaped children included), in clock ticks.
bl_ucpu() {
	local p t=0 v
	for p in "$@"; do
		v=$(awk '{sub(/.*\) /, ""); print $12 + $14}' "/proc/$p/stat" 2>/dev/null) || continue
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

# bl_fds PIDS...: open file descriptors summed.
bl_fds() {
	local p n=0
	for p in "$@"; do n=$((n + $(ls "/proc/$p/fd" 2>/dev/null | wc -l))); done
	echo "$n"
}

# bl_settle PIDS...: wait until the processes' fd count has not changed for 3 s (at most 90 s).
bl_settle() {
	local prev=-1 same=0 n
	for _ in $(seq 1 90); do
		n=$(bl_fds "$@")
		if [ "$n" = "$prev" ]; then
			same=$((same + 1))
			[ $same -ge 3 ] && return 0
		else
			same=0
		fi
		prev=$n
		sleep 1
	done
	log "warning: the fd count did not settle (last $n)"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- load ----------------------------------------------------------------------------

# bl_start_loaders ADDR K SRCBASE TAG [IMAPLOAD ARGS...]: K sessions from ceil(K/PER_PROC)
# imapload processes; process i uses the sources 127.<SRCBASE+i>.0.1-.50. NEW_FROM is the
# index of the first new one in LOADER_OUTS.
bl_start_loaders() {
	local addr=$1 k=$2 base=$3 tag=$4
	shift 4
	local procs=$(((k + PER_PROC - 1) / PER_PROC)) i n left=$k
	NEW_FROM=${#LOADER_OUTS[@]}
	for ((i = 0; i < procs; i++)); do
		n=$((left / (procs - i)))
		left=$((left - n))
		local out="$WORK/load-$tag-$i.out"
		"$WORK/bin/imapload" -addr "$addr" -n "$n" -users "$WORK/users.txt" \
			-source-ips "127.$((base + i)).0.1-127.$((base + i)).0.50" -concurrency "$CONCURRENCY" \
			-hold 0 -progress 0 -label "$tag/p$i" "$@" >"$out" 2>"$out.err" &
		LOADER_PIDS+=($!)
		LOADER_OUTS+=("$out")
	done
}

# bl_wait_loaders SECONDS: every loader started last printed READY (or exited: logged, with
# the end of its output). Sets ESTABLISHED and FAILED, summed over them.
bl_wait_loaders() {
	local limit=$1 i out all=0 t gone=" "
	for ((t = 0; t < limit * 2; t++)); do
		all=1
		for ((i = NEW_FROM; i < ${#LOADER_OUTS[@]}; i++)); do
			out=${LOADER_OUTS[$i]}
			grep -q ' READY ' "$out" 2>/dev/null && continue
			if ! kill -0 "${LOADER_PIDS[$i]}" 2>/dev/null; then
				case $gone in *" $i "*) ;; *)
					gone+="$i "
					log "loader $out exited early: $(cat "$out" "$out.err" 2>/dev/null | tail -n 3 | tr '\n' ' ')"
					;;
				esac
				continue
			fi
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

# bl_stop_loaders [PATTERN]: SIGTERM; each loader checks its sessions (NOOP, unless
# -check=false), closes them and prints a summary. Sets NOOP_OK, NOOP_CHECKED, DROPPED.
# With PATTERN (an extended regular expression) the summaries' matching lines are printed,
# indented.
bl_stop_loaders() {
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
		[ -z "${1:-}" ] || grep -E "$1" "$out" | sed 's/^/    /' || true
	done
	LOADER_OUTS=()
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2}'; }
