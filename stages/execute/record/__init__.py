"""What a run records and reports: the event recorder, resource samples, the CPU verdict, the summary."""
