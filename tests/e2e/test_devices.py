"""Torch workers on a CPU, as processes: they fork from one fork server, each pinned to its own
cores. Which device each worker gets is planned in tests/unit/test_devices.py."""

import psutil


def test_torch_workers_on_a_cpu_fork_from_one_fork_server_each_on_its_own_cores(server):
    """They start from a process that has torch loaded (not importing it again each), and
    each forked worker still holds only its share of the cores."""
    workers = [psutil.Process(pid) for pid in server.worker_processes()]
    assert len(workers) == 2
    (fork_server,) = {worker.ppid() for worker in workers}
    assert fork_server != server.proc.pid
    assert psutil.Process(fork_server).ppid() == server.proc.pid
    first, second = (set(worker.cpu_affinity()) for worker in workers)
    assert first and second and first.isdisjoint(second)
