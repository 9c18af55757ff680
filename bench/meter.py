#!/usr/bin/env python3
"""A TCP proxy on loopback that counts what crosses it, for the benchmarks: HTTP
requests (request lines from the client) and bytes each way, and optionally holds
the bytes to the client to a link rate, as a 100 Mbit/s link would.

    bench/meter.py UPSTREAM_PORT COUNTS_FILE [--mbit N]

Prints its own port on stdout, then serves until killed. SIGUSR1 writes
"requests bytes_down bytes_up" since the last SIGUSR1 to COUNTS_FILE and zeroes them.
"""
import asyncio
import os
import re
import signal
import sys
import time

REQUEST = re.compile(rb"(?:^|\r\n)(GET|HEAD|PUT|POST|DELETE) /")


class Counters:
    def __init__(self):
        self.requests = 0
        self.down = 0
        self.up = 0


counters = Counters()


class Link:
    """A token bucket shared by every connection: at most `rate` bytes a second."""

    def __init__(self, mbit):
        self.rate = mbit * 1_000_000 / 8 if mbit else None
        self.next_free = time.monotonic()

    async def take(self, n):
        if self.rate is None:
            return
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + n / self.rate
        delay = self.next_free - now
        if delay > 0:
            await asyncio.sleep(delay)


async def pipe(reader, writer, count, link=None):
    try:
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                break
            count(data)
            if link is not None:
                await link.take(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


def main():
    upstream = int(sys.argv[1])
    counts_file = sys.argv[2]
    mbit = float(sys.argv[sys.argv.index("--mbit") + 1]) if "--mbit" in sys.argv else 0
    link = Link(mbit)

    def up(data):
        counters.up += len(data)
        counters.requests += len(REQUEST.findall(data))

    def down(data):
        counters.down += len(data)

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, server_writer, up),
            pipe(server_reader, client_writer, down, link),
        )

    def dump():
        with open(counts_file + ".tmp", "w") as f:
            f.write(f"{counters.requests} {counters.down} {counters.up}\n")
        os.replace(counts_file + ".tmp", counts_file)
        counters.requests = counters.down = counters.up = 0

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
