#!/usr/bin/env python3
"""Does prelogin take longer for a name that exists than for one that does not?

Sends N interleaved POST /v1/prelogin requests over one keep-alive connection, alternating
a known name and fresh unknown names, and prints the medians and a Mann-Whitney U test
(normal approximation). |z| below 2 means the two cannot be told apart at this sample size.

    load-tests/prelogin-timing.py http://127.0.0.1:8080 alice [N]

The broker's prelogin limit per address must be lifted for the run
(SEALRELAY_AUTH_PRELOGINS_PER_IP_PER_MINUTE=1000000). Standard library only.
"""

import http.client
import json
import secrets
import statistics
import sys
import time
import urllib.parse


def main() -> None:
    base, known = sys.argv[1], sys.argv[2]
    samples = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    url = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80)

    def timed(name: str) -> float:
        body = json.dumps({"name": name})
        start = time.perf_counter_ns()
        conn.request("POST", "/v1/prelogin", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        took = (time.perf_counter_ns() - start) / 1000
        if answer.status != 200:
            sys.exit(f"prelogin answered {answer.status}: lift the prelogin limit for this run")
        return took

    for _ in range(50):  # warm up the connection and the broker
        timed(known)
    known_us, unknown_us = [], []
    for _ in range(samples):
        known_us.append(timed(known))
        unknown_us.append(timed("nobody-" + secrets.token_hex(6)))

    # Mann-Whitney U with average ranks for ties, normal approximation.
    pooled = sorted([(t, 0) for t in known_us] + [(t, 1) for t in unknown_us])
    ranks = [0.0] * len(pooled)
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    n1, n2 = len(known_us), len(unknown_us)
    r1 = sum(r for r, (_, group) in zip(ranks, pooled) if group == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    mean, sd = n1 * n2 / 2, (n1 * n2 * (n1 + n2 + 1) / 12) ** 0.5
    z = (u1 - mean) / sd
    print(
        f"{samples} interleaved samples: known median {statistics.median(known_us):.0f} µs, "
        f"unknown median {statistics.median(unknown_us):.0f} µs, Mann-Whitney z = {z:.2f}"
    )


if __name__ == "__main__":
    main()
