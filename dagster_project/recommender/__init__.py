"""The recommender as the pipeline runs it: what the model reads (`inputs`) and how it is
evaluated against the baselines (`evaluation`). The model itself lives in `models/`."""
