"""What a step asks of Kubernetes, by pool. Pure: no dagster import.

On the cluster each step runs in its own pod (``k8s_job_executor``); ``dagster-k8s`` reads a step's
``dagster-k8s/config`` op tag into that pod's spec. A step in pool ``gpu`` asks for one accelerator (requests
and limits alike: Kubernetes schedules extended resources only on a limit), and tolerates the taint GPU nodes
usually carry, so it lands on one; every other step asks only for CPU and memory.
"""

from __future__ import annotations

from typing import Any

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_POOL = "gpu"

GPU_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "4", "memory": "32Gi", GPU_RESOURCE: "1"},
            "limits": {"memory": "48Gi", GPU_RESOURCE: "1"},
        },
    },
    "pod_spec_config": {
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def step_op_tags(pool: str | None) -> dict[str, Any]:
    """The op tags a step of ``pool`` carries: the GPU pod config for pool ``gpu``, none otherwise."""
    return {K8S_CONFIG_TAG: GPU_STEP_K8S_CONFIG} if pool == GPU_POOL else {}


# What a gpu-pool asset passes to ``@dg.asset(pool=GPU_POOL, op_tags=GPU_OP_TAGS)``.
GPU_OP_TAGS: dict[str, Any] = step_op_tags(GPU_POOL)
