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

step "A new installation: schema, keys, first administrator"
run python cli.py db upgrade
CARDS_ADMIN_PASSWORD=pw-alice-2026 run python cli.py init --admin alice
CARDS_NEW_PASSWORD=pw-bob-2026 as alice operator add bob --role finance
CARDS_NEW_PASSWORD=pw-carol-2026 as alice operator add carol --role auditor
CARDS_NEW_PASSWORD=pw-dave-2026 as alice operator add dave --role admin
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

step "Reports"
as carol report stock --by face-value
as carol report stock --by hall
as carol report batches
as carol report issues

step "The operation log, and its verification"
as carol audit log --limit 8
as carol audit verify
