"""aggregate: replay request events into benchmark results and time series.

`transform.aggregate` is the pure part (LazyFrames in, DataFrames out), `run.run_aggregate` reads the
event log and writes the outputs under the data directory's lock, and `result.to_benchmark_result`
maps a row onto the seed's `BenchmarkResult`; `slo.SloPolicy` says which SLO judges each result.
"""

from stages.aggregate.result import to_benchmark_result
from stages.aggregate.run import AggregateReport, read_results, run_aggregate
from stages.aggregate.slo import SloPolicy
from stages.aggregate.transform import RESULT_SCHEMA, TIMESERIES_SCHEMA, Aggregates, aggregate

__all__ = [
    "RESULT_SCHEMA",
    "TIMESERIES_SCHEMA",
    "AggregateReport",
    "Aggregates",
    "SloPolicy",
    "aggregate",
    "read_results",
    "run_aggregate",
    "to_benchmark_result",
]
