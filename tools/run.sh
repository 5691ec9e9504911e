#!/usr/bin/env bash
# `make run`: a local Dovecot test backend on 127.0.0.1:10143, then Doorman on the example
# configuration in the foreground. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p run
printf 'alice:secret\nbob:secret\ncarol:secret\n' >run/backend-users
./bin/devbackend -dir run/backend -port 10143 -users run/backend-users -master proxy:masterpw >run/backend.log 2>&1 &
backend=$!
trap 'kill $backend 2>/dev/null; wait $backend 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
	grep -q "dovecot IMAP on" run/backend.log 2>/dev/null && break
	kill -0 $backend 2>/dev/null || { cat run/backend.log; exit 1; }
	sleep 0.1
done
cat <<MSG

Doorman listens for IMAP on 127.0.0.1:1143, in front of a Dovecot test backend on
127.0.0.1:10143. Users (cmd/doorman/example/users.passwd): alice, bob and carol, password "secret".

  curl -s --url 'imap://127.0.0.1:1143/INBOX' --user alice:secret -X 'STATUS INBOX (MESSAGES)'
  python3 -c 'import imaplib; m=imaplib.IMAP4("127.0.0.1",1143); print(m.login("carol","secret")); print(m.select("INBOX"))'

MSG
./bin/doorman -c cmd/doorman/example/doorman.yaml
