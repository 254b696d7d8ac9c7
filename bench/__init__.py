"""Benchmarks of a real deployment: gunicorn, PostgreSQL and a Redis broker.

``make bench`` runs ``bench/run.py``, which builds a throwaway database, starts the
server, runs every function in ``run.BENCHMARKS`` and prints one table (also written to
``bench/results/latest.md``). A benchmark is a function of the shared ``Context`` that
returns ``Row``s; see ``bench/intake.py`` for the pattern.
"""
