"""One replica. stdin: {"id": n, "fail": bool}; stdout: {"replica": n, "value": ...}.
A replica asked to fail exits non-zero, as a crashed function would."""
import json
import sys

req = json.load(sys.stdin)
if req.get("fail"):
    print(f"replica {req['id']} is down", file=sys.stderr)
    sys.exit(3)
json.dump({"replica": req["id"], "value": 20 + req["id"]}, sys.stdout)
