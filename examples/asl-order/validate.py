"""Validates an order. stdin: the order; stdout: {"valid": bool, "reason": str}."""
import json
import sys

order = json.load(sys.stdin)
items = order.get("items") or []
if not items:
    result = {"valid": False, "reason": "the order has no items"}
elif any(i.get("qty", 0) <= 0 for i in items):
    result = {"valid": False, "reason": "every quantity must be positive"}
elif not order.get("customer", {}).get("country"):
    result = {"valid": False, "reason": "the customer has no country"}
else:
    result = {"valid": True, "reason": "ok"}
json.dump(result, sys.stdout)
