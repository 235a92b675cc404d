"""The request pipeline: the phase table (phases.py), the registered
policies in order (registry.py) and the per-route plan built from them at
config load (plan.py). docs/architecture.md walks through it."""
