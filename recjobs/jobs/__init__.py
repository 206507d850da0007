"""The jobs: one module per step or command (load, split, train, evaluate, score_shard, precompute,
evaluate_cold_start, cold_start, tune, backtest, fetch-data, synth). Each is a plain function,
settings and a run id in, a small frozen result out. A job imports the layers below, never another job."""
