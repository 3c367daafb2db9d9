"""Side-by-side benchmarks of flowd and its peers; run with ``make bench``.

Never imported by the daemon, the client or the tests: it measures them from
the outside, the way a tool on the same machine would use them.
"""
