#!/usr/bin/env python3
"""Garbage for bench/isolation.sh: connections and datagrams that are no protocol at all.

    garbage.py --tcp HOST:PORT --tcp-conns N --udp HOST:PORT --udp-rate R --duration S

- TCP (the RTMP port): N tasks, each in a loop: connect; half of them send the RTMP version
  byte and a few random bytes and then hold the connection silent (a stuck or slowloris
  client: the server keeps it until its handshake timeout), the other half send 4 KiB of
  random bytes at once (not RTMP: refused at its first byte, unless that byte happens to be
  the version) and reconnect after 100 ms.
- UDP (the SRT port): R random datagrams a second, 16 to 1316 bytes each, in 10 ms batches.

Prints one line of totals at the end (JSON). A benchmark tool, not a test.
"""

import argparse
import asyncio
import json
import os
import random
import socket
import time


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


async def tcp_client(i, target, end, totals):
    hold = i % 2 == 0
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*target), 2)
        except (OSError, asyncio.TimeoutError):
            totals["tcp_failed"] += 1
            await asyncio.sleep(0.1)
            continue
        totals["tcp_connections"] += 1
        try:
            writer.write(b"\x03" + os.urandom(random.randint(1, 64)) if hold else os.urandom(4096))
            await writer.drain()
            # Until the server closes it (or the run ends).
            left = max(0.0, end - time.monotonic())
            await asyncio.wait_for(reader.read(65536 if not hold else 1), left)
            while hold and not reader.at_eof() and time.monotonic() < end:
                await asyncio.wait_for(reader.read(65536), max(0.0, end - time.monotonic()))
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.1)


async def udp_flood(target, rate, end, totals):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    per_batch = max(1, rate // 100)
    while time.monotonic() < end:
        for _ in range(per_batch):
            try:
                sock.sendto(os.urandom(random.randint(16, 1316)), target)
                totals["udp_datagrams"] += 1
            except OSError:
                totals["udp_failed"] += 1
        await asyncio.sleep(0.01)
    sock.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tcp", type=addr, required=True)
    p.add_argument("--tcp-conns", type=int, default=200)
    p.add_argument("--udp", type=addr, required=True)
    p.add_argument("--udp-rate", type=int, default=2000)
    p.add_argument("--duration", type=float, required=True)
    a = p.parse_args()
    end = time.monotonic() + a.duration
    totals = {"tcp_connections": 0, "tcp_failed": 0, "udp_datagrams": 0, "udp_failed": 0}
    tasks = [tcp_client(i, a.tcp, end, totals) for i in range(a.tcp_conns)]
    tasks.append(udp_flood(a.udp, a.udp_rate, end, totals))
    await asyncio.gather(*tasks)
    print(json.dumps(totals))


if __name__ == "__main__":
    asyncio.run(main())
