"""Parts shared by the recipes: precision, distributed launch, LAMB, schedules, logging, checkpoints, benchmarks, downloads."""
