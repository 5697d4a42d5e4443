"""The metrics that score a saliency map, and the statistics that aggregate them.

``catalogue`` declares every metric (name, direction, what it needs, its columns and options)
without torch, for the schema, config validation and the report; ``compute`` scores a batch of
maps (``compute_metrics``) with ``key_size``, ``deletion_insertion``, ``road`` (its options in the
torch-free ``road_options``), ``sensitivity`` and ``localisation``, all ranking pixels through
``pixel_ranking``; ``intervals`` holds the 95% intervals (Wilson, bootstrap) that every
aggregate carries.
"""
