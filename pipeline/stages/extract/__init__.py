"""Extract stage: raw Amazon review/meta files -> warehouse Parquet tables (see README)."""

from pipeline.stages.extract.report import ExtractReport
from pipeline.stages.extract.run import run_extract

__all__ = ["ExtractReport", "run_extract"]
