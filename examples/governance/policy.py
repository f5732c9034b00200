"""A governance policy program: one JSON request per line on stdin, one JSON decision per line on stdout."""
import json
import sys

for line in sys.stdin:
    request = json.loads(line)
    text = json.dumps(request["input"])
    if "refund everything" in text.lower():
        decision = {"decision": "deny", "reason": "bulk refunds need a human"}
    else:
        decision = {"decision": "allow"}
    print(json.dumps(decision), flush=True)
