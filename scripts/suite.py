"""Start, stop and inspect the whole suite on one machine (what `make run` / `make stop` call).

The same `Suite` class starts the suite for the end-to-end tests, with their own ports, state folder,
bus namespace and database prefix, so a test run never touches a running `make run`.

    python scripts/suite.py start   # RabbitMQ (if installed and down), nx-27017 unless MONGO_URL, services, gateway
    python scripts/suite.py stop
    python scripts/suite.py status
    python scripts/suite.py --replicas 2 start   # (or SUITE_REPLICAS=2) two processes of every service and gateway

Replicas: with N > 1 every domain service and the gateway run as N processes. Replica 1 keeps the service's
name, port, pid file and log (`orders`, 8083, `.state/pids/orders.pid`, `.state/logs/orders.log`); replica k
is `orders-k` on port 8083 + 100*(k-1) under `make run` (a free port in private suites), with its own pid file and
log. The replicas of a service share its one database (its nx process): consumers compete on the service's
queue, and relays and periodic jobs run once across them by their leases. Every `<SERVICE>_URL` (and the
JWKS URL) lists all replicas, comma-separated: the gateway and the service clients balance over them. Each
gateway replica is its own public entry (8080, 8180, ...); put a load balancer in front of them, or call them
directly. Replicas after the first start once the first is ready (it creates the demo data and the keys).

Without MONGO_URL each service gets its OWN nx-27017 (through the launcher scripts/nxd.py, which rolls back a
dead client's open transaction): one process, port, data dir, pid file and log per service database
(`.state/mongo/<service>/`, `.state/pids/nx-<service>.pid`, `.state/logs/nx-<service>.log`; ports 27017.. in
DB_SERVICES order, or O2O_NX_PORT..), handed to the service as `<SERVICE>_MONGO_URL`. A crash or a stall of one
cannot stall or corrupt another's. With MONGO_URL (a real replica set) no nx starts and every service uses it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("catalog", "stock", "orders", "membership", "notifications", "settlement", "gateway")
DEFAULT_PORTS = {"gateway": 8080, "catalog": 8081, "stock": 8082, "orders": 8083, "membership": 8084,
                 "notifications": 8085, "settlement": 8086}
# The services that own a database (the gateway has none); locally each gets its own nx launcher.
DEFAULT_GATEWAY_METRICS_PORT = 9080
DB_SERVICES = ("catalog", "stock", "orders", "membership", "notifications", "settlement")
DEFAULT_NX_PORT = 27017
NX_LAUNCHER = ROOT / "scripts" / "nxd.py"
# Start order: membership first (it issues the tokens the others verify and call with).
START_ORDER = ("membership", "catalog", "stock", "orders", "notifications", "settlement", "gateway")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, timeout: float = 2.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}


def enable_broker_metrics() -> None:
    """The local Prometheus scrapes RabbitMQ's own metrics (queue depths, DLQs) on :15692 when the plugin is on."""
    plugins = shutil.which("rabbitmq-plugins")
    if plugins and not port_open(15692):
        subprocess.run([plugins, "enable", "--online", "rabbitmq_prometheus"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=False)


def ensure_rabbitmq(amqp_port: int = 5672, wait_s: float = 60.0) -> None:
    if port_open(amqp_port):
        return
    server = shutil.which("rabbitmq-server")
    if server is None:
        sys.exit("RabbitMQ is not running on 127.0.0.1:5672 and is not installed.\n"
                 "Install it (Debian/Ubuntu: sudo apt-get install -y rabbitmq-server) or point AMQP_URL at a broker.")
    print("starting RabbitMQ (rabbitmq-server -detached) ...", flush=True)
    subprocess.run([server, "-detached"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + wait_s
    while not port_open(amqp_port):
        if time.monotonic() > deadline:
            sys.exit("RabbitMQ did not come up within a minute; see `rabbitmqctl status`.")
        time.sleep(0.5)
    time.sleep(2)  # the listener opens a moment before the broker accepts connections


@dataclass
class Suite:
    state_dir: Path = field(default_factory=lambda: ROOT / ".state")
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    mongo_url: str | None = None        # None: one nx-27017 launcher per service database under state_dir
    nx_port: int = DEFAULT_NX_PORT      # the first service's nx; 27017: the others follow (27018, ...)
    nx_ports: dict[str, int] = field(default_factory=dict)  # explicit per-service nx ports (else derived)
    bus_namespace: str = ""
    db_prefix: str = "o2o_"
    dev_mode: bool = True
    demo_data: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    with_prometheus: bool = False       # make run: a local Prometheus scraping the suite, when installed
    prometheus_port: int = 9090
    replicas: int = 1                   # processes per domain service and gateway
    replica_ports: dict[str, list[int]] = field(default_factory=dict)  # per service, replica 1's first (else derived)
    # The gateway's internal listener (/metrics, detailed /healthz): never on its public port. None: 9080 with
    # the default ports (what prometheus.local.yml scrapes; replica k: +100 per replica), else free ports.
    gateway_metrics_port: int | None = None
    gateway_metrics_ports: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.gateway_metrics_port is None:
            self.gateway_metrics_port = DEFAULT_GATEWAY_METRICS_PORT if self.ports == DEFAULT_PORTS else free_port()

    def metrics_port_of_gateway(self, replica: int = 1) -> int:
        ports = self.gateway_metrics_ports or [self.gateway_metrics_port]
        self.gateway_metrics_ports = ports
        while len(ports) < replica:
            ports.append(self.gateway_metrics_port + 100 * len(ports) if self.ports == DEFAULT_PORTS else free_port())
        return ports[replica - 1]

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids(self) -> Path:
        return self.state_dir / "pids"

    def url(self, service: str, replica: int = 1) -> str:
        """The base URL of one replica of a service (the first by default)."""
        return f"http://127.0.0.1:{self.ports_of(service, replica)[replica - 1]}"

    def urls(self, service: str) -> list[str]:
        return [self.url(service, replica) for replica in range(1, self.replicas + 1)]

    # -- replicas --------------------------------------------------------------------------------
    def ports_of(self, service: str, at_least: int = 1) -> list[int]:
        """Every replica's port: explicit, else the service's port then +100 per replica under the default ports
        (make run), else free ports (private suites)."""
        ports = self.replica_ports.setdefault(service, [self.ports[service]])
        while len(ports) < max(self.replicas, at_least):
            if self.ports[service] == DEFAULT_PORTS.get(service):
                ports.append(self.ports[service] + 100 * len(ports))
                continue
            taken = set(self.ports.values()) | set(self.nx_ports.values()) | {
                port for others in self.replica_ports.values() for port in others}
            port = free_port()
            while port in taken:
                port = free_port()
            ports.append(port)
        return ports

    @staticmethod
    def instance(service: str, replica: int = 1) -> str:
        """The process name (pid file, log) of one replica: `orders`, `orders-2`, ..."""
        return service if replica == 1 else f"{service}-{replica}"

    def instances(self, service: str) -> list[str]:
        return [self.instance(service, replica) for replica in range(1, self.replicas + 1)]

    def running_urls(self, service: str) -> list[str]:
        """The base URLs of the replicas of a service whose process is alive."""
        return [self.url(service, replica) for replica, name in enumerate(self.instances(service), start=1)
                if self.pid_of(name)]

    @staticmethod
    def parse_instance(name: str) -> tuple[str, int]:
        service, _, replica = name.rpartition("-")
        if service in SERVICES and replica.isdigit():
            return service, int(replica)
        return name, 1

    def metrics_url(self, service: str) -> str:
        """Where Prometheus scrapes a process: the gateway on its internal listener, the others on their port."""
        if service == "gateway":
            return f"http://127.0.0.1:{self.gateway_metrics_port}/metrics"
        return self.url(service) + "/metrics"

    # -- databases -------------------------------------------------------------------------------
    def nx_port_of(self, service: str) -> int:
        """This service's nx port: explicit, else nx_port + its DB_SERVICES index when nx_port is the default
        (make run), else nx_port for the first and a free port for each other (private suites)."""
        if service not in self.nx_ports:
            index = DB_SERVICES.index(service)
            if self.nx_port == DEFAULT_NX_PORT or index == 0:
                self.nx_ports[service] = self.nx_port + index
            else:
                taken = set(self.nx_ports.values()) | set(self.ports.values())
                port = free_port()
                while port in taken:
                    port = free_port()
                self.nx_ports[service] = port
        return self.nx_ports[service]

    def mongo_url_of(self, service: str) -> str:
        if self.mongo_url:
            return self.mongo_url
        return f"mongodb://127.0.0.1:{self.nx_port_of(service)}/?directConnection=true"

    def env(self, service: str | None = None, replica: int = 1) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()}
        if self.mongo_url:
            env["MONGO_URL"] = self.mongo_url
        else:
            for db_service in DB_SERVICES:
                env[f"{db_service.upper()}_MONGO_URL"] = self.mongo_url_of(db_service)
            if service in DB_SERVICES:
                env["MONGO_URL"] = self.mongo_url_of(service)
            else:
                env.pop("MONGO_URL", None)
        env.update({
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
            "MONGO_DB_PREFIX": self.db_prefix,
            "O2O_BUS_NAMESPACE": self.bus_namespace,
            "O2O_DEV_MODE": "true" if self.dev_mode else "false",
            "O2O_DEMO_DATA": "true" if self.demo_data else "false",
            "O2O_JWKS_URL": ",".join(url + "/auth/jwks" for url in self.urls("membership")),
        })
        if self.dev_mode:
            # One developer's machine logs in as the same few people again and again: roomier per-target budgets.
            env.setdefault("GATEWAY_RATE_LOGIN_TARGET_BURST", "60")
            env.setdefault("GATEWAY_RATE_LOGIN_PAIR_BURST", "60")
        env["GATEWAY_METRICS_PORT"] = str(self.metrics_port_of_gateway(replica if service == "gateway" else 1))
        for other in SERVICES:
            env[f"{other.upper()}_PORT"] = str(self.ports_of(other)[replica - 1 if other == service else 0])
            env[f"{other.upper()}_URL"] = ",".join(self.urls(other))
        env.update(self.extra_env)
        if replica > 1:  # the first replica loaded the demo data already
            env["O2O_DEMO_DATA"] = "false"
        return env

    # -- processes -------------------------------------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def pid_of(self, name: str) -> int | None:
        try:
            pid = int(self._pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start_mongo(self, timeout: float = 90.0) -> None:
        """One nx launcher per service database (none with MONGO_URL); started together, then awaited."""
        if self.mongo_url:
            return
        if self.pid_of("nx-27017"):
            sys.exit("an nx-27017 shared by all services (started by an older scripts/suite.py) is running; "
                     "run `make stop` first")
        started = {service: self.start_nx(service) for service in DB_SERVICES}
        deadline = time.monotonic() + timeout
        for service, process in started.items():
            while not port_open(self.nx_port_of(service)):
                if time.monotonic() > deadline or (process is not None and process.poll() is not None):
                    raise RuntimeError(f"nx for {service} did not start; see {self.logs / f'nx-{service}.log'}")
                time.sleep(0.1)

    def nx_data_dir(self, service: str) -> Path:
        return self.state_dir / "mongo" / service

    def start_nx(self, service: str) -> subprocess.Popen | None:
        name, port = f"nx-{service}", self.nx_port_of(service)
        if self.pid_of(name) and port_open(port):
            return None
        if port_open(port):
            raise RuntimeError(f"port {port} for {name} is taken by another program; set MONGO_URL or stop it")
        data = self.nx_data_dir(service)
        data.mkdir(parents=True, exist_ok=True)
        self._adopt_shared_nx_files(service, data)
        log = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen(
            [self.python, str(NX_LAUNCHER), "--data-dir", str(data), "--port", str(port),
             "--pid-file", str(data / "nxd.pid"), "--log-file", str(self.logs / f"{name}.log")],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._pid_file(name).write_text(str(process.pid))
        return process

    def _adopt_shared_nx_files(self, service: str, data: Path) -> None:
        """Move this service's database file from the old shared nx data dir (.state/mongo/<db>.db), once."""
        database = f"{self.db_prefix}{service}.db"
        old = self.state_dir / "mongo" / database
        if old.exists() and not (data / database).exists():
            for suffix in ("", "-wal", "-shm"):
                source = old.with_name(database + suffix)
                if source.exists():
                    source.rename(data / (database + suffix))

    def start_service(self, name: str) -> None:
        """Start one process: a service (its first replica) or one replica by its instance name (`orders-2`)."""
        service, replica = self.parse_instance(name)
        port = self.ports_of(service, replica)[replica - 1]
        if self.pid_of(name) and port_open(port):
            return
        if port_open(port):
            raise RuntimeError(f"port {port} for {name} is taken by another program")
        log = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen([self.python, "-m", f"services.{service}"], cwd=ROOT,
                                   env=self.env(service, replica), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self._pid_file(name).write_text(str(process.pid))

    def wait_ready(self, services=SERVICES, timeout: float = 90.0) -> None:
        """Wait for processes by instance name (a service's name is its first replica)."""
        deadline = time.monotonic() + timeout
        pending = list(services)
        while pending:
            for name in list(pending):
                service, replica = self.parse_instance(name)
                status, _ = http_json(self.url(service, replica) + "/readyz")
                if status == 200:
                    pending.remove(name)
                elif self.pid_of(name) is None:
                    raise RuntimeError(f"{name} exited; see {self.logs / (name + '.log')}")
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout:.0f}s: {', '.join(pending)} (see {self.logs})")
            if pending:
                time.sleep(0.3)

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        self.start_mongo()
        for service in START_ORDER:
            if service == "gateway":
                continue
            self.start_service(service)
            if service == "membership":  # the others fetch its JWKS and service tokens
                self.wait_ready(["membership"])
        self.wait_ready([s for s in SERVICES if s != "gateway"])
        # Further replicas once the first of each is ready: it created the demo data and the signing keys.
        more = [name for s in START_ORDER if s != "gateway" for name in self.instances(s)[1:]]
        for name in more:
            self.start_service(name)
        self.wait_ready(more)
        gateways = self.instances("gateway")
        for name in gateways:
            self.start_service(name)
        self.wait_ready(gateways)

    def scrape_targets(self) -> list[dict]:
        """Every process Prometheus scrapes, one target group per replica (file-based discovery): an alert
        then says which replica of which service is down, not only whether the first one is."""
        groups = []
        for service in SERVICES:
            for replica in range(1, self.replicas + 1):
                port = (self.metrics_port_of_gateway(replica) if service == "gateway"
                        else self.ports_of(service, replica)[replica - 1])
                groups.append({"targets": [f"127.0.0.1:{port}"],
                               "labels": {"service": service, "replica": str(replica)}})
        return groups

    def write_scrape_targets(self) -> Path:
        path = self.state_dir / "prometheus" / "targets" / "o2o.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.scrape_targets(), indent=1))
        return path

    def start_prometheus(self) -> str | None:
        binary = shutil.which("prometheus")
        config = ROOT / "deploy/prometheus/prometheus.local.yml"
        if not self.with_prometheus or binary is None or not config.exists():
            return None
        self.write_scrape_targets()
        if self.pid_of("prometheus") or port_open(self.prometheus_port):
            return f"http://127.0.0.1:{self.prometheus_port}"
        data = self.state_dir / "prometheus"
        data.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / "prometheus.log", "ab")
        process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
                                    f"--web.listen-address=127.0.0.1:{self.prometheus_port}"],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._pid_file("prometheus").write_text(str(process.pid))
        return f"http://127.0.0.1:{self.prometheus_port}"

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        pid = self.pid_of(service)
        if pid is None:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)

    def restart(self, service: str) -> None:
        self.kill(service)
        self.start_service(service)
        self.wait_ready([service])

    def started_replicas(self) -> int:
        """The most replicas any service was started with, from the pid files (1 when none)."""
        found = [self.parse_instance(path.stem) for path in self.pids.glob("*.pid")]
        return max([1] + [replica for service, replica in found if service in SERVICES])

    def stop(self) -> None:
        self.replicas = max(self.replicas, self.started_replicas())
        processes = [name for service in reversed(START_ORDER) for name in self.instances(service)]
        for name in processes:
            self.kill(name, signal.SIGTERM)
        nx = [f"nx-{service}" for service in DB_SERVICES]
        for name in (*nx, "nx-27017"):  # nx-27017: the shared nx of an older scripts/suite.py
            self.kill(name, signal.SIGTERM)
        self.kill("prometheus", signal.SIGTERM)
        for name in (*processes, *nx, "nx-27017", "prometheus"):
            self._pid_file(name).unlink(missing_ok=True)

    def status(self) -> dict[str, str]:
        result = {}
        for service in SERVICES:
            for replica, name in enumerate(self.instances(service), start=1):
                code, _ = http_json(self.url(service, replica) + "/readyz")
                result[name] = "ready" if code == 200 else ("running" if self.pid_of(name) else "stopped")
        if not self.mongo_url:
            for service in DB_SERVICES:
                port = self.nx_port_of(service)
                state = "running" if self.pid_of(f"nx-{service}") else "stopped"
                result[f"nx-{service}"] = f"{state} (port {port})" + ("" if port_open(port) else ", not listening")
        return result


def print_welcome(suite: Suite) -> None:
    dataset = json.loads((ROOT / "deploy/demo/dataset.json").read_text())
    print("\nO2O Loop is running.\n")
    print(f"  Gateway (public API)   {suite.url('gateway')}/api/v1   (health: {suite.url('gateway')}/healthz,"
          f" docs: {suite.url('gateway')}/api/docs; metrics: {suite.metrics_url('gateway')})")
    for url in suite.urls("gateway")[1:]:
        print(f"  Gateway replica        {url}/api/v1")
    for service in SERVICES:
        if service != "gateway":
            print(f"  {service:<22} {', '.join(suite.urls(service))}   (/healthz /readyz /metrics)")
    if suite.mongo_url:
        print(f"  MongoDB                {suite.mongo_url}")
    else:
        for service in DB_SERVICES:
            print(f"  MongoDB {service:<14} {suite.mongo_url_of(service)}   (nx, log {suite.logs}/nx-{service}.log)")
    print(f"  RabbitMQ               amqp://127.0.0.1:5672 (exchange {suite.bus_namespace}o2o.events)")
    if suite.pid_of("prometheus"):
        print(f"  Prometheus             http://127.0.0.1:{suite.prometheus_port}   (scraping every service)")
    print(f"  Logs                   {suite.logs}/<service>.log   (make logs)")
    print("\nDemo staff logins (POST /api/v1/auth/staff/token {\"username\", \"password\"}):")
    for person in dataset["staff"]:
        print(f"  {person['username']:<22} {person['password']:<26} {', '.join(person['roles'])}"
              f"{'  ' + ','.join(person['store_ids']) if person['store_ids'] else ''}")
    print("\nDemo members log in by phone + OTP (dev mode answers with dev_code):")
    for member in dataset["members"]:
        print(f"  {member['phone']}  {member['name']}")
    print("\nStop with `make stop`.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "restart", "broker"])
    parser.add_argument("service", nargs="?", help="restart: a service (its first replica) or a replica, e.g. orders-2")
    parser.add_argument("--replicas", type=int, default=int(os.environ.get("SUITE_REPLICAS", "1")),
                        help="processes per domain service and gateway (default: SUITE_REPLICAS or 1)")
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    nx_port = int(os.environ.get("O2O_NX_PORT", str(DEFAULT_NX_PORT)))
    suite = Suite(mongo_url=os.environ.get("MONGO_URL") or None, nx_port=nx_port,
                  nx_ports={service: nx_port + i for i, service in enumerate(DB_SERVICES)},
                  dev_mode=os.environ.get("O2O_DEV_MODE", "true").lower() == "true", with_prometheus=True,
                  replicas=args.replicas)
    if args.command == "broker":
        ensure_rabbitmq()
        return
    if args.command != "start":  # a suite started with replicas is seen whole without repeating the option
        suite.replicas = max(suite.replicas, suite.started_replicas())
    if args.command == "start":
        ensure_rabbitmq()
        try:
            suite.start()
            if shutil.which("prometheus"):
                enable_broker_metrics()
            suite.start_prometheus()
        except RuntimeError as exc:
            sys.exit(f"start failed: {exc}")
        code, health = http_json(suite.url("gateway") + "/healthz")
        print(json.dumps(health, indent=1))
        print_welcome(suite)
    elif args.command == "stop":
        suite.stop()
        print("stopped")
    elif args.command == "restart":
        suite.restart(args.service)
    else:
        for service, state in suite.status().items():
            print(f"{service:<19} {state}")


if __name__ == "__main__":
    main()
