"""A real single-node Slurm cluster on localhost for the tests, from Debian's packages.

munge, MariaDB, slurmdbd (accounting: the executor plugin polls job states with sacct),
slurmctld and slurmd, each started in the foreground by this module and stopped by the PID it
holds; state and logs live in one temporary folder. The configuration goes where every Slurm
command looks for it, /etc/slurm (the executor's job steps drop SLURM_CONF from their
environment); whatever was there is put back at the end. No cgroups here:
proctrack/linuxproc and task/none.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import debian_packages

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server")
DB_PORT = 3316  # MariaDB for slurmdbd only, on loopback
DB_PASSWORD = "spineflow-test"
CLUSTER = "spineflow"
TOOLS = (
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "sbatch",
    "sacct",
    "sacctmgr",
    "sinfo",
    "scancel",
    "squeue",
    "munged",
    "munge",
    "unmunge",
    "mariadbd",
    "mariadb",
    "mariadb-install-db",
)
CONFIG_DIR = Path("/etc/slurm")
CONFIG_FILES = ("slurm.conf", "slurmdbd.conf")


SlurmUnavailable = debian_packages.Unavailable


def install() -> None:
    """Debian's packages, without starting anything (there is no init system here)."""
    debian_packages.install(PACKAGES, TOOLS)


@dataclass
class Cluster:
    root: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    cleanup: list[Path] = field(default_factory=list)  # folders outside root to remove
    replaced: dict[str, bytes | None] = field(default_factory=dict)  # /etc/slurm as found

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(command, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr or result.stdout}")
        return result

    def _start(self, name: str, command: list[str], user: str | None = None) -> None:
        log = open(self.root / f"{name}.out", "w")  # noqa: SIM115 (closed with the process)
        if user:
            command = ["runuser", "-u", user, "--", *command]
        self.processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait(self, what: str, ready, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited: {self.tail(name)}")
            if ready():
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"{what} not ready after {timeout_s:.0f} s")

    def tail(self, name: str) -> str:
        texts = [
            p.read_text(errors="replace")[-1500:]
            for p in self.root.glob(f"{name}*")
            if p.is_file() and p.suffix in (".out", ".log")
        ]
        return "\n".join(texts)

    def stop(self) -> None:
        """Cancel what is still queued or running (job processes outlive slurmd), then stop
        exactly the daemons this cluster started, newest first, by PID."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run(
                "scancel", "--full", f"--user={pwd.getpwuid(os.geteuid()).pw_name}", check=False
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout:
                time.sleep(1)
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        for folder in self.cleanup:
            shutil.rmtree(folder, ignore_errors=True)
        for name, content in self.replaced.items():
            path = CONFIG_DIR / name
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
        self.replaced.clear()


def _host() -> str:
    """The short host name: what slurmd and slurmctld match their names against."""
    return socket.gethostname().split(".")[0]


def _node_line() -> str:
    """This machine as slurmd sees it (CPUs, memory), under its short host name."""
    described = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
    first = described.splitlines()[0]
    return first.replace(f"NodeName={first.split()[0].split('=')[1]}", f"NodeName={_host()}")


def _write_configs(cluster: Cluster) -> None:
    root, host = cluster.root, _host()
    for folder in ("state", "spool"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    for name in CONFIG_FILES:
        path = CONFIG_DIR / name
        cluster.replaced[name] = path.read_bytes() if path.exists() else None
    (CONFIG_DIR / "slurm.conf").write_text(f"""ClusterName={CLUSTER}
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
AccountingStoreFlags=job_comment
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
MinJobAge=300
{_node_line()} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    dbd = CONFIG_DIR / "slurmdbd.conf"
    dbd.write_text(f"""AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile={root}/slurmdbd.pid
LogFile={root}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={DB_PORT}
StorageUser=slurm
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
""")
    dbd.chmod(0o600)  # slurmdbd refuses a readable password file


def start(root: Path) -> Cluster:
    """Install if needed, configure under ``root`` and start the five daemons; the cluster
    is ready when its node is idle and accounting answers."""
    install()
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root)
    try:
        _write_configs(cluster)
        _start_munge(cluster)
        _start_database(cluster)
        cluster._start("slurmdbd", ["slurmdbd", "-D"])
        cluster._wait(
            "slurmdbd",
            lambda: cluster.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0,
        )
        cluster.run("sacctmgr", "-i", "add", "cluster", CLUSTER, check=False)
        cluster._start("slurmctld", ["slurmctld", "-D", "-i"])
        cluster._start("slurmd", ["slurmd", "-D"])
        cluster._wait(
            "the node", lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout
        )
    except Exception:
        cluster.stop()
        raise
    return cluster


def _start_munge(cluster: Cluster) -> None:
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True)
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    if _munge_works():  # a munged of the machine's already runs: use it, leave it be
        return
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    cluster._start("munged", ["munged", "--foreground", "--force"], user="munge")
    cluster._wait("munge", _munge_works)


def _munge_works() -> bool:
    """A credential encoded and decoded: munged is up (a stale socket file is not)."""
    encoded = subprocess.run(["munge", "-n"], capture_output=True)
    if encoded.returncode != 0:
        return False
    return subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True).returncode == 0


def _start_database(cluster: Cluster) -> None:
    # MariaDB runs as mysql, which cannot enter the test's private (0700) folders: its own
    # folder in /tmp, removed with the cluster
    home = Path(tempfile.mkdtemp(prefix="spineflow-mariadb-"))
    home.chmod(0o755)
    cluster.cleanup.append(home)
    data, socket_path = home / "data", home / "mysqld.sock"
    data.mkdir()
    shutil.chown(home, "mysql", "mysql")
    shutil.chown(data, "mysql", "mysql")
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            "--user=mysql",
            f"--datadir={data}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
    )
    cluster._start(
        "mariadbd",
        [
            "mariadbd",
            "--no-defaults",
            "--user=mysql",
            f"--datadir={data}",
            f"--socket={socket_path}",
            f"--port={DB_PORT}",
            "--bind-address=127.0.0.1",
            f"--pid-file={home}/mysqld.pid",
            "--skip-log-bin",
        ],
    )
    cluster._wait("MariaDB", socket_path.exists)
    sql = (
        f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';"
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
    )
    deadline = time.monotonic() + 30
    while True:
        result = subprocess.run(
            ["mariadb", f"--socket={socket_path}", "-u", "root", "-e", sql],
            capture_output=True,
            text=True,
        )
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise SlurmUnavailable(f"MariaDB user set-up failed: {result.stderr}")
        time.sleep(0.5)
