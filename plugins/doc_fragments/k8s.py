# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes connection options of the collection's Kubernetes modules (module_utils/_k8s.py CONNECTION_ARGS)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description: Path of the kubeconfig.
    type: path
  context:
    description: Kubeconfig context; the current one when omitted.
    type: str
"""
