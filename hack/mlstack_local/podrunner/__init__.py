"""A small kubelet for one Node that KWOK does not manage: it runs the pods bound to it as local processes.

KWOK only pretends: its pods are Running/Ready without running anything. Pods scheduled onto the
runner's Node (``mlstack-runner``, chosen with ``nodeSelector: {mlstack.io/pod-runner: "true"}``) are
really executed, so a Deployment rollout or a Job's completion means the process really served or
really exited 0.

What stands in for the container runtime (there are no namespaces here):

* **Filesystem**: each volume is materialised under ``STATE/pods/<ns>_<pod>/volumes/<volume>/`` and
  every command element, argument, environment value, working directory and exec-probe argument that
  names a ``mountPath`` (the whole string, a ``--flag=`` value, or a path token inside a shell script)
  is rewritten to the materialised directory, longest mount path first (see :mod:`.rewrite`).
* **Network**: each pod gets a loopback address from ``127.0.1.0/24``; ``0.0.0.0`` tokens in arguments
  and environment values become that address, so nothing binds to every interface. Services get a
  stable ``127.0.2.N`` address with a TCP proxy per port (see :mod:`.services`).
* **Images**: an image selects a local runtime (see :mod:`.images`), never a pulled filesystem.
"""

from __future__ import annotations

NODE_NAME = "mlstack-runner"
NODE_LABEL = "mlstack.io/pod-runner"
