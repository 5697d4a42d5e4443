"""legx: dataset-scale saliency for image classifiers.

``legx.methods`` holds the explainers and metrics (torch and numpy, no Ray); ``legx.pipeline``
the Ray Data job, its sources, sinks, configuration and command line.
"""

__version__ = "0.1.0"
