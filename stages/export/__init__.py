"""`pipeline export`: the event log as Hive-partitioned Parquet or a Delta table, for other engines."""

from stages.export.run import FORMATS, ExportReport, TableExport, run_export

__all__ = ["FORMATS", "ExportReport", "TableExport", "run_export"]
