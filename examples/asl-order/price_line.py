"""Prices one order line with VAT. stdin: {"line","sku","qty","unitPrice","country"};
stdout: the line with "net", "vat" and "total" (in cents, to stay exact)."""
import json
import sys

VAT = {"NL": 21, "DE": 19, "FR": 20}

line = json.load(sys.stdin)
net = round(line["qty"] * line["unitPrice"] * 100)
vat = net * VAT.get(line["country"], 0) // 100
json.dump(dict(line, net=net, vat=vat, total=net + vat), sys.stdout)
