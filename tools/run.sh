#!/usr/bin/env bash
# `make run`: a local Dovecot test backend on 127.0.0.2 (standard ports: IMAP 143, POP3 110,
# submission 587, LMTP 24, ManageSieve 4190), then Doorman on the example configuration in
# the foreground. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p run
./bin/devcert -dir cmd/doorman/example/tls
printf 'alice:secret\nbob:secret\ncarol:secret\n' >run/backend-users
./bin/devbackend -dir run/backend -listen 127.0.0.2 -standard-ports -protocols imap,pop3,submission,lmtp,sieve \
	-users run/backend-users -master proxy:masterpw >run/backend.log 2>&1 &
backend=$!
trap 'kill $backend 2>/dev/null; wait $backend 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
	grep -q "dovecot IMAP on" run/backend.log 2>/dev/null && break
	kill -0 $backend 2>/dev/null || { cat run/backend.log; exit 1; }
	sleep 0.1
done
cat <<MSG

Doorman listens on 127.0.0.1 (IMAP 1143, POP3 1110, submission 1587, ManageSieve 14190,
LMTP 1024; with implicit TLS IMAPS 1993, POP3S 1995, submissions 1465; STARTTLS on the
others, certificate from the test CA cmd/doorman/example/tls/ca.pem), in front of a
Dovecot test backend on 127.0.0.2. Users (cmd/doorman/example/users.passwd): alice, bob and
carol, password "secret".

  curl -s --url 'imap://127.0.0.1:1143/INBOX' --user alice:secret -X 'STATUS INBOX (MESSAGES)'
  python3 -c 'import imaplib; m=imaplib.IMAP4("127.0.0.1",1143); print(m.login("carol","secret")); print(m.select("INBOX"))'
  curl -s --url 'pop3://127.0.0.1:1110/' --user bob:secret
  curl -s --cacert cmd/doorman/example/tls/ca.pem --url 'imaps://127.0.0.1:1993/INBOX' --user alice:secret -X 'STATUS INBOX (MESSAGES)'
  openssl s_client -quiet -crlf -CAfile cmd/doorman/example/tls/ca.pem -connect 127.0.0.1:1993
  swaks --server 127.0.0.1 --port 1587 --auth PLAIN --auth-user alice --auth-password secret --to someone@example.net
  swaks --server 127.0.0.1 --port 1024 --protocol LMTP --to alice@example.org
  echo secret | sieve-connect --server 127.0.0.1 --port 14190 --user alice --passwordfd 0 --clearchan --list

MSG
./bin/doorman -c cmd/doorman/example/doorman.yaml
