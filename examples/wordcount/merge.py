"""Merges per-file counts. stdin: [{"file","counts"}]; stdout: totals and top words."""
import collections
import json
import sys

parts = json.load(sys.stdin)
total = collections.Counter()
for part in parts:
    total.update(part["counts"])
top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
json.dump(
    {"files": len(parts), "words": sum(total.values()), "top": [[w, n] for w, n in top]},
    sys.stdout,
)
