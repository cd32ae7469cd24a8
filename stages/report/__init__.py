"""report: one self-contained HTML page over the outputs of aggregate, profile and recommend.

Why a separate stage and not a notebook: the page is a build artefact like the Parquet outputs, so it
is rebuilt from the same files by one command, opens offline (inline CSS and SVG, no script, no CDN)
and is byte-identical for equal inputs, which makes it safe to publish from cron or CI.
Split as the other stages are: `data` reads, `charts` and `html` are pure, `run` writes.
"""

from stages.report.run import ReportWritten, write_report

__all__ = ["ReportWritten", "write_report"]
