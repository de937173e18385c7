#!/usr/bin/env bash
# A card's whole life on the embedded SQLite default, as an administrator would type it.
# Run with `make demo`; everything it makes lives in ./demo-run and is recreated each time.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=demo-run
rm -rf "$RUN" && mkdir -p "$RUN"
export CARDS_HOME="$RUN/var"
EXPIRY=$(python3 -c 'import datetime as d; print(d.date.today().replace(year=d.date.today().year + 2))')

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# Passwords come from the environment here so the demo runs unattended;
# an operator at a terminal is prompted instead.
as() { local who=$1; shift; CARDS_PASSWORD="pw-$who-2026" run python cli.py -u "$who" "$@"; }

step "A new installation: schema, keys, the first two administrators (alice and dave)"
run python cli.py db upgrade
CARDS_ADMIN_PASSWORD=pw-alice-2026 CARDS_SECOND_ADMIN_PASSWORD=pw-dave-2026 run python cli.py init --admin alice --admin dave

step "alice asks for bob (finance) and carol (auditor); dave approves and sets their first passwords"
as alice operator request add bob --role finance --reason "finance officer"
as alice operator request add carol --role auditor --reason "internal audit"
as alice operator request approve 1 --comment "self-approval" || echo "(refused, exit $?)"
CARDS_NEW_PASSWORD=first-bob-2026 as dave operator request approve 1 --comment "identity checked"
CARDS_NEW_PASSWORD=first-carol-2026 as dave operator request approve 2 --comment "identity checked"
as dave operator request list
# Each chooses their own password before doing anything else.
CARDS_PASSWORD=first-bob-2026 CARDS_NEW_PASSWORD=pw-bob-2026 run python cli.py -u bob operator password
CARDS_PASSWORD=first-carol-2026 CARDS_NEW_PASSWORD=pw-carol-2026 run python cli.py -u carol operator password
as alice operator list

step "The card factory makes its keys and is registered with its public key"
run python cli.py factory-sim keygen "$RUN/factory"
as alice factory register F1 --public-key "$RUN/factory/factory.pub.pem"
as alice hall add H01 "Lubei business hall"

step "Order a batch of 2,000 cards of 50 yuan (制卡); the PINs exist only in the encrypted new-card file"
as alice batch create B2026-001 --face-value 50 --quantity 2000 --box-size 100 \
    --expiry "$EXPIRY" --factory F1 --out "$RUN/B2026-001.newcard"

step "The factory prints the cards and returns a signed post-production file (two cards damaged)"
run python cli.py factory-sim produce "$RUN/B2026-001.newcard" --out "$RUN/B2026-001.produced" \
    --factory-key "$RUN/factory/factory.pem" --system-key "$RUN/var/keys/system.pub.pem" \
    --name F1 --damaged 2 --seed 7

step "Check the file card by card (核对): exit code 3 means discrepancies were found"
as alice batch check B2026-001 "$RUN/B2026-001.produced" --report-csv "$RUN/check.csv" || echo "(exit $? - see findings above)"

step "The same file cannot be imported twice"
as alice batch check B2026-001 "$RUN/B2026-001.produced" || echo "(exit $?)"

step "Stock intake (入库) of the checked cards, box by box"
as alice stock intake --batch B2026-001 --box 7 || echo "(refused, exit $?: box 7 holds a card voided at the check)"
as alice stock intake --batch B2026-001 --skip-voided
as alice report stock --by state

step "Stock count (盘点) of box 1: one card is not found"
FIRST=$(CARDS_PASSWORD=pw-alice-2026 python cli.py -u alice batch list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["serials"].split("-")[0])')
CARDS_PASSWORD=pw-alice-2026 python cli.py -u alice card show "$FIRST"
python3 - "$FIRST" > "$RUN/box1.txt" <<'PY'
import sys
from cardmgmt.serials import make_serial, parse_serial
first = parse_serial(sys.argv[1])
print("\n".join(make_serial(first + i) for i in range(1, 100)))  # the first card is missing
PY
as alice stock count --batch B2026-001 --box 1 --scanned "$RUN/box1.txt" || echo "(exit $? - discrepancies)"

step "Void the card that was not found (作废), and freeze box 20, reported stolen"
as alice card void --serial "$FIRST" --reason "not found at stock count" --yes
as alice card freeze --batch B2026-001 --box 19 --reason "box reported stolen"

step "Issue request (领卡申请): alice files, alice cannot approve, bob (finance) approves"
as alice request file --face-value 50 --quantity 300 --hall H01 --reason "weekly supply"
as alice request approve 1 --comment "self-approval" || echo "(refused, exit $?)"
as bob request approve 1 --comment "stock is sufficient"
as bob request collect 1 || echo "(finance cannot collect, exit $?)"

step "Collection (领卡出库): 300 cards, earliest expiry first, issued to hall H01"
as dave request collect 1

step "Sale at the hall (售卡): box 1 is sold over the counter; only sold cards can be recharged"
as alice sale record --hall H01 --batch B2026-001 --box 1 --skip-voided
as alice sale record --hall H01 --serial 000000000026 || echo "(refused, exit $?: already sold)"
as carol sale list
as carol hall list

step "Reports"
as carol report stock --by face-value
as carol report stock --by hall
as carol report batches
as carol report issues

step "The operation log, and its verification"
as carol audit log --limit 8
as carol audit verify

# ---------------------------------------------------------------------------------------------
step "The marketing system (a stand-in with sample accounts) and the hot-standby pair of recharge servers"
run python cli.py marketing standin
read -r PORT_A PORT_B < <(python3 -c 'import socket
def f():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
print(f(), f())')
python cli.py serve A --port "$PORT_A" --peer "https://127.0.0.1:$PORT_B" > "$RUN/server-A.log" 2>&1 &
SERVER_A=$!
python cli.py serve B --port "$PORT_B" --peer "https://127.0.0.1:$PORT_A" > "$RUN/server-B.log" 2>&1 &
SERVER_B=$!
PHONE=
stop_phone() {  # stop the demo's Asterisk (demo/phone.py stops it on SIGTERM) and wait until it is gone
    if [ -n "$PHONE" ]; then kill "$PHONE" 2>/dev/null || true; wait "$PHONE" 2>/dev/null || true; PHONE=; fi
}
trap 'stop_phone; kill $SERVER_A $SERVER_B 2>/dev/null || true' EXIT
echo "\$ python cli.py serve A --port $PORT_A --peer https://127.0.0.1:$PORT_B &   (and B the other way round)"
for _ in $(seq 50); do
    python3 -c "import ssl, urllib.request as u; u.urlopen('https://127.0.0.1:$PORT_B/v1/health', timeout=0.2, context=ssl.create_default_context(cafile='$RUN/var/keys/tls-ca.pem'))" 2>/dev/null && break
    sleep 0.2
done
sleep 2
as carol ha status
as carol client list     # the channel clients the servers accept (init registered the hotline)

step "A customer recharges an issued card through the pair (the PIN comes off the scratched card; it is never printed)"
CARD=$(CARDS_PASSWORD=pw-carol-2026 python cli.py -u carol card show 000000000026 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["serial"])')
scratch() {  # the customer reads the PIN under the scratch panel; here: from the factory's copy
    python3 - "$RUN/B2026-001.newcard" "$RUN/factory/factory.pem" "$RUN/var/keys/system.pub.pem" "$1" <<'PY'
import sys
from pathlib import Path
from testkit.factory import read_pins
newcard, factory_key, system_key, serial = sys.argv[1:]
pins = read_pins(Path(newcard), Path(factory_key), Path(system_key))
if serial in pins:
    print(pins[serial])
PY
}
echo "\$ python cli.py call --server 127.0.0.1:$PORT_A --server 127.0.0.1:$PORT_B --account 3100000001 --yes   (PIN typed, not shown)"
scratch "$CARD" | python cli.py call --server "127.0.0.1:$PORT_A" --server "127.0.0.1:$PORT_B" --account 3100000001 --caller 13800000001 --yes
echo "\$ (the same card again)"
scratch "$CARD" | python cli.py call --server "127.0.0.1:$PORT_A" --server "127.0.0.1:$PORT_B" --account 3100000002 --yes || echo "(refused, exit $?)"

step "The leading server posts the recharge to the marketing system (outbox); the account is credited once"
sleep 2
as carol marketing outbox
python3 - "$RUN/var/marketing.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for ref, acct, amount in db.execute("SELECT recharge_ref, account_no, amount FROM recharge_interface"):
    print(f"marketing interface table: {ref} account {acct} {amount / 100:.2f} yuan")
print("balance of 3100000001 now: %.2f yuan (was 128.50)" % (db.execute("SELECT balance FROM accounts WHERE account_no='3100000001'").fetchone()[0] / 100))
PY

step "Customer service looks the recharge up: by card, by account (shown masked), and the card itself"
as carol recharge find --serial "$CARD"
as carol recharge find --account 3100000001 --json
as carol card show "$CARD"

step "A customer phones the hotline (95598): a real Asterisk runs the phone dialog against the same pair"
# The Asterisk sandbox (testkit/sandbox.py) is brought up the way the end-to-end tests do it
# (testkit/sandbox.py, start_hotline): built on first use, then started with the prompts and the AGI pointed at A and B.
# A SIPp caller then keys the call script demo/phone-recharge.call; the PIN goes in on standard input.
if [ "$(id -u)" != 0 ]; then
    echo "(skipped: the Asterisk sandbox runs under chroot, which needs root; run make demo as root to see it)"
else
    echo "\$ python demo/phone.py --server 127.0.0.1:$PORT_A --server 127.0.0.1:$PORT_B --api-key-file $RUN/var/keys/api.key --ca-file $RUN/var/keys/tls-ca.pem ... &"
    python demo/phone.py --server "127.0.0.1:$PORT_A" --server "127.0.0.1:$PORT_B" \
        --api-key-file "$RUN/var/keys/api.key" --ca-file "$RUN/var/keys/tls-ca.pem" --prompts "$RUN/prompts" --ready "$RUN/asterisk.port" &
    PHONE=$!
    until [ -s "$RUN/asterisk.port" ]; do
        if ! kill -0 "$PHONE" 2>/dev/null; then
            wait "$PHONE" || true
            PHONE=
            echo "the Asterisk sandbox did not start (see above)" >&2
            exit 1
        fi
        sleep 0.5
    done
    SIP_PORT=$(cat "$RUN/asterisk.port")
    CARD3=000000000042
    echo "\$ python cli.py replay demo/phone-recharge.call --port $SIP_PORT --secret PIN   (card $CARD3; PIN keyed, not shown)"
    scratch "$CARD3" | python cli.py replay demo/phone-recharge.call --port "$SIP_PORT" --secret PIN --workdir "$RUN/phone"
    stop_phone

    step "The phone recharge reaches the marketing system: account 3100000003 is credited 50 yuan"
    python3 - "$RUN/var/marketing.db" "$CARD3" <<'PY'
import sqlite3, sys, time
db_file, serial = sys.argv[1:]
deadline = time.monotonic() + 30  # the leading server's outbox posts within a second or two
while True:
    with sqlite3.connect(db_file) as db:
        row = db.execute("SELECT recharge_ref, account_no, amount FROM recharge_interface WHERE card_serial = ?",
                         (serial,)).fetchone()
        balance = db.execute("SELECT balance FROM accounts WHERE account_no = '3100000003'").fetchone()[0]
    if row or time.monotonic() > deadline:
        break
    time.sleep(0.5)
if row is None:
    sys.exit(f"card {serial}'s recharge has not reached the marketing system")
print(f"marketing interface table: {row[0]} account {row[1]} {row[2] / 100:.2f} yuan (card {serial}, by phone)")
print(f"balance of 3100000003 now: {balance / 100:.2f} yuan (was 0.00)")
PY
fi

step "Server A dies (kill -9); B takes over the jobs and the callers"
echo "\$ kill -9 <server A>"
{ kill -9 "$SERVER_A" && wait "$SERVER_A"; } 2>/dev/null || true
sleep 5
as carol ha status
CARD2=000000000034
echo "\$ python cli.py call ... --account 3100000005 --yes   (A is down: the client moves to B)"
scratch "$CARD2" | python cli.py call --server "127.0.0.1:$PORT_A" --server "127.0.0.1:$PORT_B" --account 3100000005 --yes

step "A reversal (冲正): the last recharge went to the wrong account; an administrator files it, finance approves it"
REF=$(CARDS_PASSWORD=pw-carol-2026 python cli.py -u carol recharge find --serial "$CARD2" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ref"])')
as alice reversal file "$REF" --reason "the customer keyed a neighbour's account"
as alice reversal approve 1 --comment "self-approval" || echo "(refused, exit $?: the filer cannot approve)"
as bob reversal approve 1 --comment "call recording checked"
sleep 3   # the leading server posts the counter-entry once its original is posted
as carol reversal show 1

step "SMS notices (短信告知) queued for the customers: each recharge, and the reversal"
as carol marketing sms

TODAY=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(hours=8)).date())')
step "The day's settlement at hall H01 (电费解交): what its sales owe, the bank slip finance records, the balance"
as alice settle pay --hall H01 --day "$TODAY" --amount 4000.00 --ref SLIP-0001 || echo "(refused, exit $?: only finance records payments)"
as bob settle pay --hall H01 --day "$TODAY" --amount 4000.00 --ref SLIP-0001
as bob settle pay --hall H01 --day "$TODAY" --amount 4000.001 --ref SLIP-0002 || echo "(refused, exit $?)"
as carol report settlement --from "$TODAY" --to "$TODAY"

step "Reports in yuan (--json in fen, --csv for spreadsheets)"
as carol report sales --by hall
as carol report recharges --by channel
as carol report reversals --by channel
as carol report stock-value --by hall

step "Daily reconciliation (对账) with the marketing system"
sleep 2
as bob marketing reconcile "$TODAY"
