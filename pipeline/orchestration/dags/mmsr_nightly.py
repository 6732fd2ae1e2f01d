"""The MMSR nightly Airflow DAGs: one per dataset in ``settings.datasets`` (plus ``demo``, see README).

Thin on purpose: settings come from ``MMSR_*`` / ``MMSR_CONFIG`` and the task graph from
``pipeline.orchestration.dag``; tasks run the same stage functions as the ``mmsr`` CLI.
"""

from pipeline.core.config import load_settings
from pipeline.orchestration.dag import build_dags

globals().update(build_dags(load_settings()))
