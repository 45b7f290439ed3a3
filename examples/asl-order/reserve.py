"""Reserves stock. stdin: {"orderId","skus"}; stdout: {"reservationId","skus"}.
A sku starting with "gone-" is out of stock: the call fails (exit code 1)."""
import json
import sys

req = json.load(sys.stdin)
missing = [s for s in req["skus"] if s.startswith("gone-")]
if missing:
    print("out of stock: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
json.dump({"reservationId": "rs-" + req["orderId"], "skus": req["skus"]}, sys.stdout)
