"""Differential fuzzer of fastgw against h11 (issue 17): backend.py, oracle.py,
mutators.py, runner.py, campaign.py; test_differential.py replays corpus/ and
runs a bounded campaign; scripts/fuzz_proxy.py is the long mode."""
