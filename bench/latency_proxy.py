"""A TCP proxy on 127.0.0.1 that makes a local server look far away.

Every chunk of bytes waits DELAY seconds before it is forwarded, in each
direction, so one request/answer round trip costs 2 x DELAY (10 ms -> 20 ms).
Chunks keep their order and are not slowed by each other: a client that
pipelines ten commands pays one round trip, not ten.  Opening a connection
also costs one round trip (the upstream connection is opened DELAY seconds
late, and the server's greeting is delayed DELAY seconds on its way back).

As a library (what ``bench/compare.py`` does)::

    with LatencyProxy("127.0.0.1", sink_port, delay=0.010) as proxy:
        ...  # connect to 127.0.0.1:proxy.port instead of sink_port

From the command line (prints the port, runs until Ctrl-C)::

    python bench/latency_proxy.py --target 127.0.0.1:2525 [--port 0] [--delay 0.010]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from types import TracebackType

HOST = "127.0.0.1"
CHUNK = 65536


async def _read_into(reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]],
                     delay: float) -> None:
    """Read chunks and queue each with the time it may be forwarded; b"" marks the end."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((loop.time() + delay, data))
            if not data:
                return
    except (ConnectionError, OSError):
        await queue.put((loop.time(), b""))


async def _write_from(queue: asyncio.Queue[tuple[float, bytes]],
                      writer: asyncio.StreamWriter) -> None:
    """Forward queued chunks once their time has come; half-close at the end."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        return


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """One direction of a connection: reader -> (delay) -> writer."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    await asyncio.gather(_read_into(reader, queue, delay), _write_from(queue, writer))


class LatencyProxy:
    """The proxy, run by its own asyncio loop in a daemon thread.

    ``port`` is known after :meth:`start`; ``connections`` counts the accepted
    client connections.
    """

    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.010,
                 port: int = 0) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.delay = delay
        self.port = port
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        """Connect upstream (one delay late) and pump both directions until both end."""
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        await asyncio.sleep(self.delay)
        try:
            server_reader, server_writer = await asyncio.open_connection(
                self.target_host, self.target_port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(_pipe(client_reader, server_writer, self.delay),
                                 _pipe(server_reader, client_writer, self.delay))
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio's stream callback would log a re-raise)
        finally:
            for writer in (client_writer, server_writer):
                writer.close()

    async def _serve(self) -> None:
        """Listen, report the port, serve until :meth:`stop`, then end every connection."""
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._handle, HOST, self.port)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    def _run(self) -> None:
        """Thread body: a fresh event loop running :meth:`_serve`."""
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    def start(self) -> LatencyProxy:
        """Start the thread and wait (at most 10 s) until the proxy listens."""
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("latency proxy did not start")
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and end the thread (at most ~5 s)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LatencyProxy:
        """Start the proxy (see :meth:`start`)."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def main() -> None:
    """Command line: run a proxy in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free)")
    parser.add_argument("--delay", type=float, default=0.010,
                        help="seconds added to every chunk, each way (default 0.010)")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    with LatencyProxy(host, int(port), delay=args.delay, port=args.port) as proxy:
        print(f"{HOST}:{proxy.port} -> {args.target}, +{args.delay * 1000:g} ms each way", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
