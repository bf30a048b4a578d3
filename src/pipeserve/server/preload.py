"""Imported once by the fork server (`launch.py`), never by the server: what every worker
and front end forked from it would otherwise import itself.

OpenMP reads its settings from the environment once, when torch loads it, so they are set
here, before torch: a forked worker can no longer change them (its thread count it sets with
torch.set_num_threads).
"""

import os
import signal

# A SIGTERM or Ctrl-C sent to the server's whole process group (systemd, a terminal) must
# not end the fork server: the server still watches its forked children through it, and
# drains them. It ends when the server does (multiprocessing closes its pipe). Its children
# inherit these; workers and front ends ignore both signals anyway.
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
# What forks from here runs on the CPU; a CUDA build of torch must not see the GPUs.
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# As worker.pin sets it for spawned workers (why: there).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pipeserve.server.backends.torch_runner  # noqa: E402, F401  (imported to be shared)
