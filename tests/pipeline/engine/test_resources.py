"""Actor CPUs chosen from the cluster: the job with metrics that run the model runs with default
settings on the 2-CPU local Ray, and a setting the cluster cannot run is one config error."""

from __future__ import annotations

import duckdb
import pytest

from legx.pipeline.demo.data import write_demo_dataset
from legx.pipeline.engine.config import ConfigError, load_config
from legx.pipeline.engine.resources import ResourceError, actor_resources

METRICS = "metrics=[key_size_mean,deletion_auc,insertion_auc,pointing_game,gini]"


@pytest.mark.parametrize(
    ("pools", "actors", "cluster", "node", "gpu", "expected"),
    [
        (1, 1, 2, 2, False, 1.0),    # a 2-core laptop, explain pool only
        (2, 1, 2, 2, False, 0.5),    # ... with a metrics pool: half a CPU each
        (2, 2, 2, 2, False, 0.25),
        (2, 1, 3, 3, False, 0.75),
        (1, 1, 16, 16, False, 8.0),  # half a larger machine to the model
        (1, 1, 16, 4, False, 2.0),   # four 4-CPU nodes: an actor fits on one node
        (2, 1, 16, 16, True, 1.0),   # a GPU actor's CPUs only feed the GPU
    ],
)
def test_actor_cpus_are_chosen_from_the_cluster(pools, actors, cluster, node, gpu, expected):
    resources = actor_resources(pools, actors, None, cluster, node, gpu)
    assert resources.actor_cpus == expected and resources.chosen
    assert pools * actors * resources.actor_cpus + 1 <= cluster or gpu
    assert f"x {expected:g} CPU (chosen for this cluster" in resources.describe()


def test_settings_the_cluster_cannot_run_are_refused_in_one_line():
    assert actor_resources(2, 1, 0.5, 2, 2, False).actor_cpus == 0.5
    with pytest.raises(ResourceError) as refused:
        actor_resources(2, 1, 1.0, 2, 2, False)
    assert "\n" not in str(refused.value)
    assert "2 actor pool(s) of 1 actor(s) x 1 CPU leave no CPU" in str(refused.value)
    with pytest.raises(ResourceError, match="this cluster has 1 CPU"):
        actor_resources(1, 1, None, 1, 1, False)


def test_model_metrics_run_with_defaults_on_two_cpus(ray_local, tmp_path):
    from legx.pipeline.engine.run import run_job

    assert ray_local.cluster_resources()["CPU"] == 2
    demo = tmp_path / "demo"
    write_demo_dataset(str(demo), 3, seed=1, image_size=32)
    config = load_config(None, [f"input={demo}", f"output={tmp_path / 'out'}", "methods=[leg]",
                                "leg.n_samples=16", "leg.grid_size=4", "run_id=laptop", METRICS])
    assert config.actor_cpus is None
    summary = run_job(config)
    assert (summary.images, summary.ok, summary.errors) == (3, 3, 0)
    assert "2 actor pool(s) of 1 actor(s) x 0.5 CPU (chosen for this cluster" in summary.resources
    scored = duckdb.sql(f"select count(*) from read_parquet('{tmp_path / 'out'}/saliency/*.parquet') "
                        "where deletion_auc is not null and insertion_auc is not null").fetchall()
    assert scored == [(3,)]


def test_explicit_actor_cpus_the_cluster_cannot_run_are_a_config_error(ray_local, tmp_path):
    from legx.pipeline.engine.run import run_job

    config = load_config(None, [f"input={tmp_path}", f"output={tmp_path / 'out'}", "methods=[leg]",
                                "actor_cpus=1", METRICS])
    with pytest.raises(ConfigError) as refused:
        run_job(config)
    assert refused.value.problems == [
        "actor_cpus: 2 actor pool(s) of 1 actor(s) x 1 CPU leave no CPU for decoding and solving on"
        " this cluster (2 CPUs); lower actors or actor_cpus, or leave actor_cpus unset to have legx choose"
    ]
