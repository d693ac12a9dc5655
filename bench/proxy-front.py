#!/usr/bin/env python3
"""proxy-front.py: a tiny L4 "load balancer" for the benchmarks: it speaks the PROXY protocol.

What it does
  Accepts TCP connections on 127.0.0.1:--listen, opens one to 127.0.0.1:--to for each, writes a
  PROXY protocol header naming --client as the source (version 1 text or version 2 binary,
  TCP over IPv4), then relays bytes both ways until either side closes. bench/callgrind.sh
  puts it between h2load and a zgate listener with `proxy_protocol = true`
  (PROXY_PROTOCOL=v1|v2), so that every connection zgate serves opens with a header to parse.
  It runs outside valgrind: its own cost is not in the figures.

Run: python3 bench/proxy-front.py --listen PORT --to PORT [--version v1|v2]
  [--client 203.0.113.9]. Binds loopback only; stops on SIGTERM or Ctrl-C.
"""

import argparse
import asyncio
import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def header(version, client, client_port, dst_port):
    if version == "v1":
        return f"PROXY TCP4 {client} 127.0.0.1 {client_port} {dst_port}\r\n".encode()
    src = ipaddress.IPv4Address(client).packed
    dst = ipaddress.IPv4Address("127.0.0.1").packed
    addrs = src + dst + struct.pack("!HH", client_port, dst_port)
    # Version 2, command PROXY; AF_INET, STREAM; the address block's length.
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--to", type=int, required=True)
    ap.add_argument("--version", choices=["v1", "v2"], default="v1")
    ap.add_argument("--client", default="203.0.113.9")
    args = ap.parse_args()

    async def serve(client_reader, client_writer):
        port = client_writer.get_extra_info("peername")[1]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", args.to)
        except OSError:
            client_writer.close()
            return
        up_writer.write(header(args.version, args.client, port, args.to))
        await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))

    server = await asyncio.start_server(serve, "127.0.0.1", args.listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
