"""The Kafka side of newsflow: Faust app, topics, record schemas, settings and the CLI.

Every newsflow process runs NumPy's OpenBLAS on one thread, set here before anything imports
NumPy (an environment value wins): parallelism is one worker process per core, spaCy's NER
never calls OpenBLAS, and the idle thread OpenBLAS starts makes every mutex in the parser
slower (measured: the enrichment chain's CPU per English page -10 to -14%, BENCHMARKS.md).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
