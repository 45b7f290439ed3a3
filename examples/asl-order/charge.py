"""Charges an order. stdin: {"orderId","lines","idempotencyKey"}; stdout:
{"amount": euros, "chargeId"}. The idempotency key (States.Hash of the lines)
is what a real gateway would deduplicate retried charges on; it must be a
SHA-256 hex digest.

The payment gateway is flaky on purpose: the first attempt for each order
fails (exit code 1), so that the state machine's Retry shows. Attempts are
counted in a file under $ORDER_STATE_DIR (default: the system temp dir)."""
import json
import os
import sys
import tempfile

req = json.load(sys.stdin)
key = req.get("idempotencyKey", "")
if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
    print("bad idempotency key: %r" % key, file=sys.stderr)
    sys.exit(2)
state_dir = os.environ.get("ORDER_STATE_DIR", tempfile.gettempdir())
marker = os.path.join(state_dir, "trigflow-asl-order-charge-" + req["orderId"])
if not os.path.exists(marker):
    open(marker, "w").close()
    print("payment gateway timed out", file=sys.stderr)
    sys.exit(1)
os.remove(marker)
cents = sum(line["total"] for line in req["lines"])
json.dump({"amount": cents / 100, "chargeId": "ch-" + req["orderId"]}, sys.stdout)
