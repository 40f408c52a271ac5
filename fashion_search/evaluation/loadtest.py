"""Load test of the real topology on loopback: gateway, model services (1 or 2 embedder replicas), search service and
Redis as local processes; simple and fine searches at several client counts, uncached and cached, batching off and on.

Bounded: each cell sends a fixed number of requests and stops issuing new ones after a time cap; every process it
starts is stopped at the end. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from fashion_search.core.catalog import load_catalog
from fashion_search.core.settings import Settings

LOOPBACK = "127.0.0.1"
MODEL_SERVICES = ("detector", "segmenter", "embedder", "image-embedder")
# The embedders are what a second replica is added for: every query runs one of them.
REPLICATED = ("embedder", "image-embedder")
START_TIMEOUT_S = 240.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Config:
    """One topology under test: batching on or off in every model, and how many replicas each embedder has."""

    batching: bool
    replicas: int

    @property
    def name(self) -> str:
        """Short label for the table."""
        return f"batching {'on' if self.batching else 'off'}, {self.replicas} embedder replica" + (
            "s" if self.replicas > 1 else "")


CONFIGS = {"off": Config(False, 1), "on": Config(True, 1), "on2": Config(True, 2), "off2": Config(False, 2)}


@dataclass
class Cell:
    """The measurements of one cell: a config, a mode, cached or not, a number of concurrent clients."""

    config: Config
    mode: str
    cached: bool
    clients: int
    latencies_ms: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # 0: no answer (client timeout or connection error)
    degraded: int = 0
    wall_s: float = 0.0
    load_avg: float = 0.0  # the machine's 1-minute load average when the cell ended (others' jobs included)

    @property
    def requests_per_s(self) -> float:
        """Answered requests (any status) per second of wall time."""
        answered = sum(1 for s in self.statuses if s)
        return answered / self.wall_s if self.wall_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile (ms) over the 200 answers, nearest rank; nan without any."""
        ok = sorted(lat for lat, s in zip(self.latencies_ms, self.statuses, strict=True) if s == 200)
        if not ok:
            return float("nan")
        return ok[min(len(ok) - 1, max(0, round(q / 100 * len(ok) + 0.5) - 1))]

    @property
    def server_errors(self) -> int:
        """5xx answers other than 503 (deliberate back-pressure or an outage answered in time)."""
        return sum(1 for s in self.statuses if s >= 500 and s != 503)

    @property
    def unavailable(self) -> int:
        """503 answers."""
        return self.statuses.count(503)

    @property
    def no_answer(self) -> int:
        """Requests without an HTTP answer in the client's timeout."""
        return self.statuses.count(0)


def free_port() -> int:
    """A free TCP port on loopback (bound and released: the service binds it a moment later)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fashion_search.cli", *args]


def _setting(service: str) -> str:
    """A service's name in FS_* variables: image-embedder -> IMAGE_EMBEDDER."""
    return service.replace("-", "_").upper()


class Topology:
    """The services, each a local process on a loopback port, and the gateway in front of them."""

    def __init__(self, data_dir: Path, redis_url: str, config: Config, extra_env: dict[str, str] | None = None,
                 logs: Path | None = None) -> None:
        self.config = config
        self.logs = logs or Path(tempfile.mkdtemp(prefix="fs-topology-logs-"))
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        for name in MODEL_SERVICES:
            for r in range(config.replicas if name in REPLICATED else 1):
                self.ports[self._replica(name, r)] = free_port()
        self.ports["search"] = free_port()
        self.ports["gateway"] = free_port()
        # Each process serves Prometheus metrics on a port of its own (replicas included), never the fixed defaults.
        self.metrics_ports = {name: free_port() for name in self.ports}
        env = {k: v for k, v in os.environ.items() if not k.startswith("FS_")}
        env.update({
            "FS_DATA_DIR": str(data_dir), "FS_BIND_HOST": LOOPBACK, "FS_INDEX_BACKEND": "edge",
            "FS_REDIS_URL": redis_url, "FS_CACHE_ENABLED": "true", "FS_LOG_LEVEL": "WARNING", "FS_BROKER_URL": "",
            "FS_SEARCH_PORT": str(self.ports["search"]), "FS_GATEWAY_PORT": str(self.ports["gateway"]),
        })
        for model in ("detector", "segmenter", "embedder", "image_embedder"):
            env[f"FS_{model.upper()}_BATCHING"] = "on" if config.batching else "off"
        env.update(extra_env or {})
        self.env = env
        self.client_env = {**env, **{f"FS_{_setting(n)}_URL": self.url(n) for n in (*MODEL_SERVICES, "search")}}

    @staticmethod
    def _replica(name: str, r: int) -> str:
        return name if r == 0 else f"{name}#{r + 1}"

    def replicas(self, name: str) -> list[str]:
        """The process names of a service's replicas."""
        return [p for p in self.ports if p == name or p.startswith(f"{name}#")]

    def url(self, name: str) -> str:
        """The client URL of a service: one address, or the grpc `ipv4:` list of its replicas (round robin)."""
        addresses = [f"{LOOPBACK}:{self.ports[p]}" for p in self.replicas(name)]
        return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)

    @property
    def base(self) -> str:
        """The gateway's base URL."""
        return f"http://{LOOPBACK}:{self.ports['gateway']}"

    def start_service(self, proc_name: str) -> None:
        """Start (or restart, on the same port) one service process."""
        name = proc_name.split("#")[0]
        env = {**self.env, f"FS_{_setting(name)}_PORT": str(self.ports[proc_name]),
               f"FS_{_setting(name)}_METRICS_PORT": str(self.metrics_ports[proc_name])}
        log = (self.logs / f"{proc_name}.log").open("a")
        self.procs[proc_name] = subprocess.Popen(_cli("serve", name), env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self, proc_names: Sequence[str]) -> None:
        """Wait until each named service answers SERVING (its process must stay up)."""
        for proc_name in proc_names:
            url = f"grpc://{LOOPBACK}:{self.ports[proc_name]}"
            self._wait(lambda url=url: subprocess.run(_cli("healthcheck", url), env=self.env).returncode == 0,
                       proc_name)

    def start(self) -> None:
        """Start every service, then the gateway, and wait until the gateway is ready."""
        services = [p for p in self.ports if p != "gateway"]
        for proc_name in services:
            self.start_service(proc_name)
        self.wait_healthy(services)
        log = (self.logs / "gateway.log").open("a")
        env = {**self.client_env, "FS_GATEWAY_METRICS_PORT": str(self.metrics_ports["gateway"])}
        self.procs["gateway"] = subprocess.Popen(
            _cli("serve", "gateway"), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self._wait(self.ready, "gateway")

    def ready(self) -> bool:
        """Whether the gateway answers /readyz with 200."""
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait(self, check: object, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}: "
                                       f"{self.log_tail(name)}")
            if check():  # type: ignore[operator]
                return
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {START_TIMEOUT_S:.0f}s")

    def log_tail(self, name: str, chars: int = 2000) -> str:
        """The end of a process's log."""
        path = self.logs / f"{name}.log"
        return path.read_text()[-chars:] if path.exists() else ""

    def kill(self, proc_name: str) -> None:
        """SIGKILL one process and reap it (a crash, not a graceful stop)."""
        proc = self.procs[proc_name]
        proc.kill()
        proc.wait(timeout=30)

    def stop(self) -> None:
        """Stop every process: SIGTERM, then SIGKILL whatever is still up after a grace period."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextmanager
def running(topology: Topology) -> Iterator[Topology]:
    """The topology started, and stopped on the way out whatever happens."""
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


def query_photos(folder: Path) -> list[Path]:
    """Photos under folder (any depth), in a fixed order that interleaves the classes."""
    by_class: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            by_class.setdefault(path.parent.name, []).append(path)
    out: list[Path] = []
    for i in range(max((len(v) for v in by_class.values()), default=0)):
        out.extend(v[i] for v in by_class.values() if i < len(v))
    return out


def search_once(client: httpx.Client, base: str, data: bytes, mode: str) -> tuple[int, float, bool]:
    """One search: (status, latency ms, degraded); status 0 when no answer came."""
    start = time.perf_counter()
    try:
        resp = client.post(f"{base}/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
                           data={"mode": mode, "top_k": "12"})
    except httpx.HTTPError:
        return 0, (time.perf_counter() - start) * 1000.0, False
    latency = (time.perf_counter() - start) * 1000.0
    degraded = resp.status_code == 200 and resp.json().get("degraded") is not None
    return resp.status_code, latency, degraded


def run_cell(cell: Cell, base: str, photos: Sequence[bytes], cap_s: float, client_timeout_s: float) -> Cell:
    """Send len(photos) searches from cell.clients threads (each takes the next photo), issuing none after cap_s."""
    lock = threading.Lock()
    next_index = [0]
    start = time.perf_counter()

    def client_loop() -> None:
        with httpx.Client(timeout=client_timeout_s) as client:
            while True:
                with lock:
                    i = next_index[0]
                    if i >= len(photos) or time.perf_counter() - start > cap_s:
                        return
                    next_index[0] += 1
                status, latency, degraded = search_once(client, base, photos[i], cell.mode)
                with lock:
                    cell.statuses.append(status)
                    cell.latencies_ms.append(latency)
                    cell.degraded += int(degraded)

    threads = [threading.Thread(target=client_loop) for _ in range(cell.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cell.wall_s = time.perf_counter() - start
    cell.load_avg = os.getloadavg()[0]
    return cell


def ingest_catalog(topology: Topology, n_products: int) -> int:
    """Index n products of the bundled sample catalog (spread over its classes) through the remote services."""
    from fashion_search.pipeline.components import build_pipeline
    from fashion_search.pipeline.ingest import Ingestor

    settings = Settings(**{  # type: ignore[arg-type]
        k.removeprefix("FS_").lower(): v for k, v in topology.client_env.items() if k.startswith("FS_")
    })
    records = load_catalog(settings.sample_catalog)
    step = max(1, len(records) // n_products)
    pipeline = build_pipeline(settings)
    try:
        report = Ingestor(pipeline, settings).ingest_records(records[::step][:n_products])
        return report.indexed
    finally:
        pipeline.index.close()


@dataclass
class LoadTestPlan:
    """What to run: configs, client counts, modes, requests per client, time cap per cell."""

    configs: list[Config]
    clients: list[int]
    modes: list[str]
    per_client: int
    min_requests: int
    cap_s: float
    catalog_size: int
    model_threads: int

    def requests(self, clients: int) -> int:
        """Requests in a cell with this many clients."""
        return max(self.min_requests, clients * self.per_client)


def run_loadtest(plan: LoadTestPlan, queries: Path, redis_url: str, log: object = print) -> list[Cell]:
    """Run every cell of the plan, one topology per config (the index is ingested once and reused)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the table
    photos = query_photos(queries)
    per_mode = sum(plan.requests(c) for c in plan.clients)
    warm = max(plan.clients)
    needed = len(plan.modes) * per_mode + warm
    if len(photos) < needed:
        raise ValueError(f"{queries} holds {len(photos)} photos; the plan needs {needed} distinct ones")
    data = [p.read_bytes() for p in photos[:needed]]
    warm_photos = data[-warm:]
    cells: list[Cell] = []
    cache = redis.Redis.from_url(redis_url)
    extra = {"FS_TORCH_THREADS": str(plan.model_threads), "FS_ONNX_THREADS": str(plan.model_threads)}
    with tempfile.TemporaryDirectory(prefix="fs-loadtest-") as tmp:
        data_dir = Path(tmp) / "data"
        ingested = False
        for config in plan.configs:
            topology = Topology(data_dir, redis_url, config, extra, Path(tmp) / "logs")
            log(f"starting: {config.name}")
            with running(topology):
                if not ingested:
                    n = ingest_catalog(topology, plan.catalog_size)
                    log(f"indexed {n} sample catalog products")
                    ingested = True
                cache.flushdb()  # every config starts uncached
                for mode in plan.modes:  # warm-up: first calls, first batch shapes; not measured
                    run_cell(Cell(config, mode, False, warm), topology.base, warm_photos, plan.cap_s, 60.0)
                cache.flushdb()
                client_timeout = float(Settings().request_deadline_s) + 20.0
                for m, mode in enumerate(plan.modes):
                    offset = m * per_mode
                    for clients in plan.clients:
                        n = plan.requests(clients)
                        cell_photos = data[offset:offset + n]
                        offset += n
                        for cached in (False, True):  # the uncached pass fills the cache the cached pass reads
                            cell = run_cell(Cell(config, mode, cached, clients), topology.base, cell_photos,
                                            plan.cap_s, client_timeout)
                            cells.append(cell)
                            log(row(cell))
    return cells


HEADER = ("| config | mode | cache | clients | requests | req/s | p50 ms | p99 ms | 5xx (not 503) | 503 | no answer "
          "| degraded |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(cell: Cell) -> str:
    """One table row."""
    return (f"| {cell.config.name} | {cell.mode} | {'cached' if cell.cached else 'uncached'} | {cell.clients} "
            f"| {len(cell.statuses)} | {cell.requests_per_s:.2f} | {cell.percentile(50):.0f} "
            f"| {cell.percentile(99):.0f} | {cell.server_errors} | {cell.unavailable} | {cell.no_answer} "
            f"| {cell.degraded} |")


def _find(cells: Sequence[Cell], config: Config, mode: str, clients: int) -> Cell | None:
    for c in cells:
        if c.config == config and c.mode == mode and c.clients == clients and not c.cached:
            return c
    return None


def comparisons(cells: Sequence[Cell]) -> list[str]:
    """Side-by-side ratios at the most clients: batching on against off, two replicas against one (uncached)."""
    if not cells:
        return []
    most = max(c.clients for c in cells)
    lines = []
    for mode in sorted({c.mode for c in cells}, key=["simple", "fine", "tag"].index):
        for a, b, what in ((CONFIGS["on"], CONFIGS["off"], "batching on / off"),
                           (CONFIGS["on2"], CONFIGS["on"], "2 / 1 embedder replicas (batching on)")):
            new, old = _find(cells, a, mode, most), _find(cells, b, mode, most)
            if new and old and old.requests_per_s > 0:
                lines.append(
                    f"- {mode}, {most} clients, uncached, {what}: {new.requests_per_s / old.requests_per_s:.2f}× "
                    f"req/s ({new.requests_per_s:.2f} against {old.requests_per_s:.2f}), p99 "
                    f"{new.percentile(99):.0f} against {old.percentile(99):.0f} ms"
                )
    errors = sum(c.server_errors for c in cells)
    silent = sum(c.no_answer for c in cells)
    lines.append(f"- 5xx other than 503: {errors}; requests without an answer: {silent}")
    return lines


def to_markdown(cells: Sequence[Cell], plan: LoadTestPlan, command: str, note: str = "") -> str:
    """The report section: conditions, the table, the ratios."""
    cpu = platform.processor() or platform.machine()
    lines = [
        f"## Load test: concurrent searches on the real topology (loopback), {plan.model_threads} thread(s) per model",
        "",
        f"`{command}` on {os.cpu_count()} CPU cores ({cpu}, {platform.system()}), no GPU: gateway, detector, "
        "segmenter, embedder, image embedder and search service as local processes, Redis cache. "
        f"{plan.catalog_size} sample catalog products indexed; each uncached request a distinct validation photo; "
        f"the cached pass replays the same photos. Requests per cell: max({plan.min_requests}, "
        f"{plan.per_client} × clients), none issued after {plan.cap_s:.0f} s; p99 of so few requests is about the "
        f"slowest one. Model services with FS_TORCH_THREADS and FS_ONNX_THREADS={plan.model_threads}. {note}".rstrip(),
        "",
        HEADER,
        *(row(c) for c in cells),
        "",
        *comparisons(cells),
        f"- the machine's 1-minute load average at the end of the cells: {min(c.load_avg for c in cells):.1f} to "
        f"{max(c.load_avg for c in cells):.1f} (on {os.cpu_count()} cores)" if cells else "",
        "",
    ]
    return "\n".join(lines)
