"""Confirms a reading. stdin: {"reading": x}; stdout: {"accepted": bool}."""
import json
import sys

req = json.load(sys.stdin)
json.dump({"accepted": 0 < req["reading"] < 100}, sys.stdout)
