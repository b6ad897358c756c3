"""Runs the SQL of the README's "Reading blocks with DuckDB" section against a data
directory, so the README's example is known to work.

usage: duckdb_reads_readme_queries.py README DATA_DIR EXPECTED_TRACE_ID

Prints each query's rows; exits 1 unless every query runs, returns rows, and the expected
trace shows up in every one of them.
"""

import re
import sys

import duckdb

readme, data_dir, expected = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(readme, encoding="utf-8").read()
section = text.split("## Reading blocks with DuckDB", 1)[1].split("\n## ", 1)[0]
queries = re.findall(r"```sql\n(.*?)```", section, re.S)
if not queries:
    sys.exit("no sql blocks in the README section")
for q in queries:
    q = q.replace("strand-data/", data_dir.rstrip("/") + "/")
    rows = duckdb.sql(q).fetchall()
    print(q.strip(), "\n->", rows[:5])
    if not rows:
        sys.exit("query returned no rows")
    if not any(expected in str(r) for r in rows):
        sys.exit(f"trace {expected} not in the result of:\n{q}")
print("README queries OK")
