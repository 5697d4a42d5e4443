"""The model actors' CPUs, chosen from the cluster's resources when the config leaves
``actor_cpus`` unset, and checked when it sets them.

The model actors hold their CPUs for the whole job; the task stages (decoding, LP solves,
metrics without a model, writes) need at least one CPU free, or the job stalls. Without a
setting, the actors get half the CPUs, at least one CPU left over, never more than one node
has (an actor runs on one node), shared among the pools' actors, fractional where needed: on
a 2-core machine one pool of one actor gets 1 CPU, two pools (metrics that run the model) get
0.5 CPU each. On a GPU an actor's CPUs feed the GPU and matter less: at most 1 CPU each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The share of the cluster's CPUs that the model actors take when actor_cpus is unset.
AUTO_ACTOR_SHARE = 0.5
# CPUs kept free for the task stages (decode, finish, score, write).
TASK_CPUS = 1.0
# Fractional CPUs are chosen in steps of this size (Ray schedules fractions of a CPU).
CPU_STEP = 0.05


class ResourceError(ValueError):
    """The cluster cannot run the job's actor pools and leave a CPU for the task stages."""


@dataclass(frozen=True)
class ActorResources:
    """The actor pools of a job: ``pools`` (the explain pool, and a metrics pool when a metric
    runs the model) of ``actors`` actors of ``actor_cpus`` CPUs each, on a cluster of
    ``cluster_cpus`` CPUs (largest node ``node_cpus``); ``chosen``: legx chose actor_cpus."""

    pools: int
    actors: int
    actor_cpus: float
    cluster_cpus: float
    node_cpus: float
    gpu: bool
    chosen: bool

    def describe(self) -> str:
        how = "chosen for this cluster" if self.chosen else "as configured"
        return (f"{self.pools} actor pool(s) of {self.actors} actor(s) x {self.actor_cpus:g} CPU ({how};"
                f" {self.cluster_cpus:g} CPUs{', GPU' if self.gpu else ''}); set actor_cpus to override")

    def as_dict(self) -> dict:
        return {"pools": self.pools, "actors": self.actors, "actor_cpus": self.actor_cpus,
                "cluster_cpus": self.cluster_cpus, "gpu": self.gpu, "chosen": self.chosen}


def actor_resources(pools: int, actors: int, actor_cpus: float | None, cluster_cpus: float,
                    node_cpus: float, gpu: bool) -> ActorResources:
    """The actors' CPUs: ``actor_cpus`` when set, else chosen (module docstring). Raises
    ResourceError, in one line, when the pools would leave no CPU for the task stages (checked
    on CPU-only clusters; a cluster reporting no CPUs is not checked)."""
    slots = pools * actors
    chosen = actor_cpus is None
    if chosen:
        share = min(cluster_cpus * AUTO_ACTOR_SHARE, cluster_cpus - TASK_CPUS) / slots
        share = min(share, node_cpus * AUTO_ACTOR_SHARE, 1.0 if gpu else math.inf)
        actor_cpus = math.floor(share / CPU_STEP + 1e-9) * CPU_STEP
        actor_cpus = round(actor_cpus, 2) if actor_cpus < 1 else float(math.floor(actor_cpus))
        if actor_cpus < CPU_STEP and not gpu and cluster_cpus:
            raise ResourceError(
                f"this cluster has {cluster_cpus:g} CPU(s): {pools} actor pool(s) of {actors} actor(s)"
                f" and the decoding and solving tasks need at least {TASK_CPUS + slots * CPU_STEP:g};"
                " lower actors, or run on a machine with more CPUs"
            )
        actor_cpus = max(actor_cpus, CPU_STEP)
    resources = ActorResources(pools, actors, actor_cpus, cluster_cpus, node_cpus, gpu, chosen)
    if not gpu and cluster_cpus and slots * actor_cpus + TASK_CPUS > cluster_cpus + 1e-9:
        raise ResourceError(
            f"actor_cpus: {pools} actor pool(s) of {actors} actor(s) x {actor_cpus:g} CPU leave no CPU"
            f" for decoding and solving on this cluster ({cluster_cpus:g} CPUs); lower actors or"
            " actor_cpus, or leave actor_cpus unset to have legx choose"
        )
    return resources
