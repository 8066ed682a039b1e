"""Runs leadstream's ClickHouse migrations, loads the sink's JSONEachRow
export and answers every analyst and dashboard query on a current ClickHouse
release (chDB: ClickHouse in-process; the tests' server is 18.16).

Input (argv[1], JSON): {"migrations": [{"name", "statements"}],
"export_dir", "tables", "queries": [{"label", "sql"}]}.
Prints JSON: {"version", "loaded": {table: rows after FINAL}, "answers": {label: rows},
"errors": ["..."]}.
"""

import json
import os
import sys
import tempfile

from chdb import session


def scalar(s, sql):
    return json.loads(str(s.query(sql, "JSON")))["data"][0]["n"]


def main():
    spec = json.load(open(sys.argv[1]))
    s = session.Session(tempfile.mkdtemp())
    s.query("CREATE DATABASE leadstream")
    s.query("USE leadstream")
    report = {"version": scalar(s, "SELECT version() AS n"), "loaded": {}, "answers": {}, "errors": []}
    for m in spec["migrations"]:
        for i, stmt in enumerate(m["statements"], 1):
            try:
                s.query(stmt)
            except Exception as e:  # noqa: BLE001 - the error text is the report
                report["errors"].append(f"migration {m['name']}, statement {i}: {e}")
    for table in spec["tables"]:
        path = os.path.join(spec["export_dir"], f"{table}.jsonl")
        try:
            with open(path) as f:
                s.query(f"INSERT INTO {table} FORMAT JSONEachRow\n" + f.read())
            report["loaded"][table] = scalar(s, f"SELECT toUInt64(count()) AS n FROM {table} FINAL")
        except Exception as e:  # noqa: BLE001
            report["errors"].append(f"loading {path}: {e}")
    for q in spec["queries"]:
        try:
            report["answers"][q["label"]] = scalar(s, f"SELECT toUInt64(count()) AS n FROM ({q['sql']})")
        except Exception as e:  # noqa: BLE001
            report["errors"].append(f"{q['label']}: {e}\n{q['sql']}")
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
