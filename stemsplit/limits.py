"""Bounds of the settings that hold for every model, kept free of torch so that the command line
checks them before any model is loaded or downloaded."""

MAX_SHIFTS = 20  # each shift is a whole pass, held in memory alongside the others
# Every chunk costs a whole network call however short it is, and an overlap of x runs each sample
# 1 / (1 - x) times: a bound that keeps a run within about 10 times its default cost.
MAX_OVERLAP = 0.9
