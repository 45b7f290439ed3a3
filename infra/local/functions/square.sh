#!/bin/sh
# A `cmd:` function: the input JSON (a number) on stdin, the output JSON on
# stdout.
read -r x
echo $((x * x))
