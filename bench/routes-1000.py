#!/usr/bin/env python3
"""routes-1000.py: 1000 [[route]]s for bench/callgrind.sh's EXTRA_TOML.

Prints a `[[pool]] bench` holding the callgrind backend (127.0.0.1:$BACKEND_PORT, default
18380 = callgrind.sh's BASE_PORT) and 1000 routes to it, shaped like proxy/benches/routes.rs:
400 exact hosts with `/` and `/api/` (800), 100 wildcards, 99 any-host prefixes `/svcI/vJ/`,
and the one that h2load's requests take (their host is 127.0.0.1:PORT), chosen by HIT:
  any (default): any host, `/bytes`; no exact or wildcard route names 127.0.0.1, so the
    lookup also pays for their misses;
  exact: host `127.0.0.1`, `/bytes` (the exact hosts' table, then that host's prefixes);
  wildcard: host `*.0.0.1`, `/bytes` (the exact table missed, then the wildcard suffixes).

    EXTRA_TOML="$(python3 bench/routes-1000.py)" LABEL="1000 routes" bash bench/callgrind.sh
"""
import os

port = int(os.environ.get("BACKEND_PORT", "18380"))
hit = os.environ.get("HIT", "any")
last = {"any": None, "exact": "127.0.0.1", "wildcard": "*.0.0.1"}[hit]
out = [f'[[pool]]\nname = "bench"\nbackends = ["127.0.0.1:{port}"]\n']
routes = []
for i in range(400):
    for prefix in ("/", "/api/"):
        routes.append((f"app{i}.example.com", prefix))
for i in range(100):
    routes.append((f"*.tenant{i}.example.net", "/"))
for i in range(50):
    for j in range(2):
        routes.append((None, f"/svc{i}/v{j}/"))
routes = routes[:999] + [(last, "/bytes")]
assert len(routes) == 1000
for host, prefix in routes:
    out.append("[[route]]")
    if host:
        out.append(f'host = "{host}"')
    out.append(f'path_prefix = "{prefix}"\npool = "bench"')
print("\n".join(out))
