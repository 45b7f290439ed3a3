"""Lists the .txt files of a directory. stdin: {"dir": ...}; stdout: [paths]."""
import json
import os
import sys

args = json.load(sys.stdin)
folder = args.get("dir", "data")
files = sorted(
    os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".txt")
)
json.dump(files, sys.stdout)
