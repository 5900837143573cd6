"""Entry point of the local load-balancer image (see its Dockerfile): render the shipped nginx.conf for
Debian's nginx, then exec nginx on it.

The upstream line ``server NAME:PORT resolve PARAMS;`` (nginx >= 1.27.3) becomes one ``server ADDR:PORT
PARAMS;`` per IPv4 address that the container's DNS (compose's) gives for NAME, waiting up to
LB_RESOLVE_TIMEOUT_S (60) for LB_EXPECT_REPLICAS (1) of them. Addresses are read once, at start: a replica
restarted with a new address is not followed (the real `resolve` would). Written to /tmp (a tmpfs in compose).
"""

import os
import re
import socket
import sys
import time

TEMPLATE = os.environ.get("LB_TEMPLATE", "/etc/nginx/nginx.conf")
OUT = "/tmp/nginx-rendered.conf"
LINE = re.compile(
    r"^(?P<indent>[ \t]*)server[ \t]+(?P<host>[^\s:;]+):(?P<port>\d+)[ \t]+resolve(?P<params>[^;]*);", re.M
)


def addresses(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]) for info in infos})


def main() -> None:
    with open(TEMPLATE) as f:
        text = f.read()
    m = LINE.search(text)
    if m is None:
        sys.exit(f"lb-render: {TEMPLATE} has no upstream `server NAME:PORT resolve ...;` line")
    host, port = m["host"], int(m["port"])
    want = int(os.environ.get("LB_EXPECT_REPLICAS", "1"))
    deadline = time.monotonic() + float(os.environ.get("LB_RESOLVE_TIMEOUT_S", "60"))
    while len(found := addresses(host, port)) < want:
        if time.monotonic() > deadline:
            sys.exit(f"lb-render: {host} resolves to {found or 'nothing'}, expected {want} address(es)")
        time.sleep(0.5)
    servers = "\n".join(f"{m['indent']}server {a}:{port}{m['params']};" for a in found)
    with open(OUT, "w") as f:
        f.write(text[: m.start()] + servers + text[m.end() :])
    print(f"lb-render: upstream {host}:{port} -> {', '.join(found)}", file=sys.stderr, flush=True)
    # Debian's nginx has no compiled-in user that exists here (nobody/nogroup): the workers run as www-data.
    os.execvp("nginx", ["nginx", "-c", OUT, "-e", "/dev/stderr", "-g", "daemon off; user www-data;"])


if __name__ == "__main__":
    main()
