"""Counts the words of one file. stdin: "path"; stdout: {"file":..., "counts": {...}}."""
import collections
import json
import re
import sys

path = json.load(sys.stdin)
with open(path, encoding="utf-8") as f:
    words = re.findall(r"[a-z']+", f.read().lower())
json.dump({"file": path, "counts": collections.Counter(words)}, sys.stdout)
