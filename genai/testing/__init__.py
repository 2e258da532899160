"""Machinery for tests, benchmarks and local experiments, not used by genai's runtime:
a multi-node Ray cluster of ``ray start`` processes on one machine (:mod:`.localcluster`)."""
