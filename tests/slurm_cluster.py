"""A real one-node SLURM cluster on this machine, for the tests of `sweep --slurm`: a munge key and
munged, a slurm.conf generated into a temp dir (free ports, its state, spool and logs under that
dir), slurmctld and slurmd started as root with `-f` that conf; `SLURM_CONF` names it to the client
commands (sbatch, squeue, scontrol, scancel). Process tracking by /proc (proctrack/linuxproc) and no
task plugin: no cgroups needed, so it runs inside a container. Debian's `slurm-wlm` and `munge`
(.ci/tools installs them). Run as a script it starts one and waits (to try commands by hand).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import watchfiles

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")


def slurm_installed() -> bool:
    return all(shutil.which(name) or Path("/usr/sbin", name).exists() for name in DAEMONS + CLIENTS)


def daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb() -> int:
    """The node's RealMemory: a little under what the machine has (slurmd refuses a node that
    claims more than it finds)."""
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return max(256, total_kb // 1024 // 2)


def slurm_conf(root: Path, host: str, cpus: int, ports: tuple[int, int], munge_socket: Path) -> str:
    ctld_port, slurmd_port = ports
    return f"""\
ClusterName=entrenar-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
SlurmdTimeout=60
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    env: dict[str, str] = field(default_factory=dict)  # SLURM_CONF, for the client commands
    pids: list[int] = field(default_factory=list)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A client command (sbatch, squeue, scontrol...) against this cluster."""
        return subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True, check=check,
            timeout=60,
        )  # fmt: skip

    def node_state(self) -> str:
        done = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n" + (self.root / name).read_text(errors="replace")[-3000:]
            for name in ("munged.log", "slurmctld.log", "slurmd.log")
            if (self.root / name).exists()
        )

    def stop(self) -> None:
        """Every job cancelled, then each daemon this cluster started stopped (by its pid)."""
        self.run("scancel", "--full", "--user=root", check=False)
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:  # psutil waits on a child, and polls /proc for a daemon that forked away
                psutil.Process(pid).wait(timeout=30)
            except psutil.NoSuchProcess:
                continue
            except psutil.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)


def start_cluster(root: Path, cpus: int = 2, timeout: float = 120) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in the foreground (-D/-F: their pids are ours to stop)
    and wait until sinfo shows the node idle; raise, with their logs, if it never does."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("state", "spool", "munge"):
        (root / name).mkdir(exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = root / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, host, cpus, (free_port(), free_port()), munge_socket))
    cluster = SlurmCluster(root, conf, {"SLURM_CONF": str(conf)})

    def spawn(*argv: str, log: str) -> subprocess.Popen:
        with open(root / log, "ab") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **cluster.env},
                start_new_session=True,
            )  # fmt: skip

    try:
        munged = spawn(
            daemon("munged"), "--foreground", "--force", f"--socket={munge_socket}",
            f"--key-file={key}", f"--pid-file={root}/munge/munged.pid",
            f"--seed-file={root}/munge/munged.seed", f"--log-file={root}/munged.log",
            log="munged.out",
        )  # fmt: skip
        cluster.pids.append(munged.pid)
        wait_for(lambda: munge_socket.exists(), "munged's socket", cluster, timeout)
        ctld = spawn(daemon("slurmctld"), "-D", "-i", "-f", str(conf), log="slurmctld.out")
        cluster.pids.append(ctld.pid)
        slurmd = spawn(daemon("slurmd"), "-D", "-f", str(conf), log="slurmd.out")
        cluster.pids.append(slurmd.pid)
        wait_for(lambda: cluster.node_state() == "idle", "the node idle in sinfo", cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def wait_for(condition, what: str, cluster: SlurmCluster, timeout: float) -> None:
    """Wake on the cluster's own files (its logs, sockets, state) or every 200 ms until
    condition() holds; fail with the daemons' logs after `timeout`."""
    deadline = time.monotonic() + timeout
    for _ in watchfiles.watch(
        cluster.root, rust_timeout=200, yield_on_timeout=True, debounce=20, recursive=True
    ):
        if condition():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the test SLURM cluster: timed out waiting for {what}\n{cluster.logs()}"
            )


if __name__ == "__main__":  # pragma: no cover - by hand
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="slurm-"))
    cluster = start_cluster(where)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"export SLURM_CONF={cluster.conf}  # Ctrl-C stops it", flush=True)
    try:
        signal.pause()
    finally:
        cluster.stop()
